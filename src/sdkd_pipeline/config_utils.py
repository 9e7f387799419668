"""Reading dataclass configs from parameter mappings, with errors that name the parameter.

``from_params(cls, mapping, param_path)`` is the one loader: a config is a dataclass whose type
hints and ``param(...)`` bounds say what each parameter may be (see the section below).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import Any, TypeVar

from sdkd_pipeline.errors import ConfigError

T = TypeVar("T")


def unknown_parameter(
    param_path: str, key: str, allowed: Iterable[str], hint: str = ""
) -> ConfigError:
    """The error for a key ``param_path`` does not take, naming ``<param_path>.<key>`` and the
    allowed keys (the one wording of the loader and of every other check of keys)."""
    return ConfigError(
        f"{param_path}.{key}: unknown parameter (allowed: {', '.join(sorted(allowed))}){hint}"
    )


def list_param(value: Any) -> list[str]:
    """A list parameter, also when given on the command line: Kedro splits ``--params`` at
    commas, so lists are written ``navier_stokes+weatherbench`` (also ``|``, ``;``, spaces)."""
    if isinstance(value, str):
        return [n for n in re.split(r"[\s,;|+\[\]]+", value) if n]
    return [str(v) for v in value]


# --------------------------------------------------------------------------------------------
# the one config loader: dataclass fields, their type hints and their bounds
#
# A config is a dataclass; each field's type hint says what a value may be and
# ``param(default, ge=..., gt=..., le=..., lt=..., choices=...)`` (or ``field(metadata=...)``)
# its bounds. ``from_params(cls, mapping, param_path)`` builds it: every unknown key is named
# with its full parameter path and the known keys, every value is checked (and an int given for
# a float is made a float) with an error that names ``<param_path>.<key>``, then the class's own
# ``validate(param_path)`` (if it has one) checks what involves several fields.
# ``param(..., key="cutoff.k")`` reads a field from a nested section of the mapping (or under a
# name that is not an identifier, ``key="lambda"``), so a flat config can mirror nested YAML.
# ``param(..., convert=f)`` maps a parameter's value before it is checked (a spelling such as
# one value for a list, see ``one_or_list``); ``param(..., note="...")`` is added to its errors.
# YAML-style numbers are read as what they mean: a string YAML 1.1 leaves unparsed (``1e-3``,
# ``1.0e6``: an exponent without a dot or sign) where a number is expected, and a whole float
# (``64.0``) where an integer is (``check_fields`` on an instance takes neither).
# The bounds of a list field hold for each item. A field named ``param_path`` (not a parameter)
# is given the ``param_path`` the config is read from.
# ``check_fields(obj, param_path)`` runs the same per-field checks on an instance (for
# ``__post_init__``, so a config built directly in code is checked too).

_BOUNDS = (
    ("ge", ">=", lambda v, b: v >= b),
    ("gt", ">", lambda v, b: v > b),
    ("le", "<=", lambda v, b: v <= b),
    ("lt", "<", lambda v, b: v < b),
)


def param(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
    multiple_of: int | None = None,
    key: str | None = None,
    convert: Any = None,
    note: str | None = None,
    **field_kwargs: Any,
) -> Any:
    """A dataclass field with the bounds ``from_params`` / ``check_fields`` check; ``key`` is
    its parameter's name when that is not the field's (dotted: inside a section); ``convert``
    maps a parameter's value before ``from_params`` checks it; ``note`` ends its errors."""
    meta = {
        k: v
        for k, v in (
            ("ge", ge),
            ("gt", gt),
            ("le", le),
            ("lt", lt),
            ("choices", choices),
            ("multiple_of", multiple_of),
            ("key", key),
            ("convert", convert),
            ("note", note),
        )
        if v is not None
    }
    meta.update(field_kwargs.pop("metadata", None) or {})
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata=meta, **field_kwargs
    )


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return "a list"
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        dict: "a mapping",
    }.get(hint, getattr(hint, "__name__", str(hint)))


# what YAML 1.1 (PyYAML's safe_load) reads as a string: an exponent without a dot or a sign
_YAML_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce_value(where: str, value: Any, hint: Any, lenient: bool = False) -> Any:
    """``value`` as type ``hint`` (an int for a float becomes a float); ``ConfigError`` if it
    is not one. ``lenient`` also takes YAML-style numbers (see the section comment); a union
    takes a value its own type first (``0.0`` stays a float for ``int | float``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        lists = [a for a in args if typing.get_origin(a) in (list, tuple, collections.abc.Sequence)]
        if isinstance(value, list | tuple) and len(lists) == 1:
            # a list for ``list[X] | None``: the error names the item that is not an X
            return _coerce_value(where, value, lists[0], lenient)
        for loose in (False, True) if lenient else (False,):
            for arg in (a for a in args if a is not type(None)):
                try:
                    return _coerce_value(where, value, arg, loose)
                except ConfigError:
                    continue
        raise ConfigError(f"{where} must be {_describe(hint)}, got {value!r}")
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(f"{where} must be {_describe(hint)}, got {value!r}")
    if origin in (list, tuple, collections.abc.Sequence):
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        out = [_coerce_value(f"{where}[{i}]", v, item, lenient) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, Integral) and not isinstance(value, bool):
            return int(value)
        if lenient and isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if lenient and isinstance(value, str) and _YAML_FLOAT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        if isinstance(value, Real) and not isinstance(value, bool):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
    elif hint is str:
        if isinstance(value, str):
            return value
    elif isinstance(hint, type):
        if isinstance(value, hint):
            return value
    else:
        return value
    raise ConfigError(f"{where} must be {_describe(hint)}, got {value!r}")


def one_or_list(value: Any) -> list[Any]:
    """A list parameter also written as one value (``formats: onnx``) or null (none): a
    ``convert`` for ``param``."""
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        return [value]
    return list(value)


def check_value(
    where: str, value: Any, hint: Any, meta: Mapping[str, Any], *, lenient: bool = False
) -> Any:
    """``value`` checked against its type ``hint`` and the bounds in ``meta`` (``ge``, ``gt``,
    ``le``, ``lt``, ``choices``, ``multiple_of``; ``None`` is not bounded, a list's bounds hold
    for each item); returns the coerced value. ``meta["note"]`` ends the error message.
    ``lenient``: a parameter's value, so YAML-style numbers are taken (``from_params``)."""
    try:
        value = _coerce_value(where, value, hint, lenient)
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            shown = ", ".join("null" if c is None else repr(c) for c in choices)
            raise ConfigError(f"{where} must be one of {shown}, got {value!r}")
        if isinstance(value, list | tuple):
            for i, item in enumerate(value):
                _check_bounds(f"{where}[{i}]", item, meta)
        else:
            _check_bounds(where, value, meta)
    except ConfigError as err:
        if meta.get("note"):
            raise ConfigError(f"{err} ({meta['note']})") from None
        raise
    return value


def _check_bounds(where: str, value: Any, meta: Mapping[str, Any]) -> None:
    if value is not None and not isinstance(value, bool):
        for key, op, ok in _BOUNDS:
            if key in meta and isinstance(value, Real) and not ok(value, meta[key]):
                raise ConfigError(f"{where} must be {op} {meta[key]}, got {value!r}")
        step = meta.get("multiple_of")
        if step and isinstance(value, Integral) and value % step:
            what = "even" if step == 2 else f"a multiple of {step}"
            raise ConfigError(f"{where} must be {what}, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _key(f: dataclasses.Field) -> str:
    """The parameter name of field ``f`` (``param(key=...)``, else the field's name)."""
    return f.metadata.get("key", f.name)


def _flatten(params: Mapping[str, Any], keys: set[str], where: str) -> dict[str, Any]:
    """``params`` with the sections that dotted ``keys`` read flattened to dotted keys
    (``{"cutoff": {"k": 4}}`` -> ``{"cutoff.k": 4}``; a null section is empty); an unknown
    key, at the top or in a section, is named with its full path and the known keys."""
    heads = {k.split(".", 1)[0] for k in keys}
    unknown = sorted(set(params) - heads)
    if unknown:
        raise unknown_parameter(where, unknown[0], heads)
    out: dict[str, Any] = {}
    for name, value in params.items():
        inner = {k.split(".", 1)[1] for k in keys if k.startswith(f"{name}.")}
        if not inner:
            out[name] = value
            continue
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}.{name} must be a mapping, got {value!r}")
        out.update({f"{name}.{k}": v for k, v in _flatten(value, inner, f"{where}.{name}").items()})
    return out


def check_fields(obj: Any, param_path: str) -> None:
    """Every field of dataclass instance ``obj`` against its type hint and bounds."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.init and not f.metadata.get("internal"):
            check_value(f"{param_path}.{_key(f)}", getattr(obj, f.name), hints[f.name], f.metadata)


def from_params(cls: type[T], params: Mapping[str, Any] | None, param_path: str, **fixed: Any) -> T:
    """Build dataclass ``cls`` from a parameters mapping (see the section comment above);
    ``fixed`` are constructor arguments that are not parameters (e.g. ``param_path``)."""
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError(f"{param_path} must be a mapping of parameters, got {params!r}")
    if "param_path" not in fixed and any(
        f.name == "param_path" and f.init for f in dataclasses.fields(cls)
    ):
        fixed = {**fixed, "param_path": param_path}
    fields = {
        _key(f): f
        for f in dataclasses.fields(cls)
        if f.init and f.name not in fixed and not f.metadata.get("internal")
    }
    params = _flatten(params or {}, set(fields), param_path)
    hints = _hints(cls)
    values = {
        fields[k].name: check_value(
            f"{param_path}.{k}",
            fields[k].metadata["convert"](v) if fields[k].metadata.get("convert") else v,
            hints[fields[k].name],
            fields[k].metadata,
            lenient=True,
        )
        for k, v in params.items()
    }
    missing = [
        k
        for k, f in fields.items()
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{param_path}.{missing[0]}: required parameter missing")
    obj = cls(**values, **fixed)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(param_path)
    return obj
