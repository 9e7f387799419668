"""The one config loader: type hints and bounds of a dataclass, errors naming the parameter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from sdkd_pipeline.config_utils import check_fields, from_params, one_or_list, param
from sdkd_pipeline.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    k: int = param(4, ge=1)


@dataclass(frozen=True)
class Example:
    epochs: int = param(10, ge=1)
    lr: float = param(1e-3, gt=0)
    factor: float = param(0.5, gt=0, lt=1)
    patience: int | None = param(5, ge=1)
    schedule: str | None = param(None, choices=(None, "cosine", "plateau"))
    mode: Literal["fixed", "energy"] = "fixed"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = param(default_factory=Inner)
    required: str = param("x")

    def validate(self, param_path: str) -> None:
        if self.epochs < (self.patience or 0):
            raise ConfigError(f"{param_path}.patience ({self.patience}) exceeds epochs")


def test_values_are_checked_and_coerced():
    cfg = from_params(
        Example,
        {
            "epochs": 20,
            "lr": 1,
            "patience": None,
            "schedule": "cosine",
            "mode": "energy",
            "flag": True,
            "sizes": [3, 4],
        },
        "t",
    )
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert (cfg.patience, cfg.schedule, cfg.mode, cfg.sizes) == (None, "cosine", "energy", (3, 4))
    assert from_params(Example, None, "t") == Example()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epoch": 3}, r"^t\.epoch: unknown parameter \(allowed: epochs, factor, flag, inner, lr,"),
        ({"epochs": 0}, r"^t\.epochs must be >= 1, got 0$"),
        ({"epochs": 2.5}, r"^t\.epochs must be an integer, got 2\.5$"),
        ({"epochs": True}, r"^t\.epochs must be an integer, got True$"),
        ({"lr": 0}, r"^t\.lr must be > 0, got 0"),
        ({"lr": float("nan")}, r"^t\.lr must be a finite number, got nan$"),
        ({"lr": "fast"}, r"^t\.lr must be a number, got 'fast'$"),
        ({"factor": 1.0}, r"^t\.factor must be < 1, got 1\.0$"),
        ({"patience": 0}, r"^t\.patience must be >= 1, got 0$"),
        ({"patience": "x"}, r"^t\.patience must be an integer or null, got 'x'$"),
        (
            {"schedule": "step"},
            r"^t\.schedule must be one of null, 'cosine', 'plateau', got 'step'$",
        ),
        ({"mode": "other"}, r"^t\.mode must be one of 'fixed', 'energy', got 'other'$"),
        ({"flag": "yes"}, r"^t\.flag must be true or false, got 'yes'$"),
        ({"sizes": "12"}, r"^t\.sizes must be a list, got '12'$"),
        ({"sizes": [1, "a"]}, r"^t\.sizes\[1\] must be an integer, got 'a'$"),
        ({"epochs": 2, "patience": 3}, r"^t\.patience \(3\) exceeds epochs$"),
    ],
)
def test_a_bad_value_names_its_full_path(params, message):
    with pytest.raises(ConfigError, match=message):
        from_params(Example, params, "t")


def test_a_non_mapping_section_and_a_missing_required_field_are_named():
    with pytest.raises(ConfigError, match=r"^t must be a mapping of parameters, got 3$"):
        from_params(Example, 3, "t")

    @dataclass
    class Needs:
        name: str

    with pytest.raises(ConfigError, match=r"^n\.name: required parameter missing$"):
        from_params(Needs, {}, "n")


def test_check_fields_checks_an_instance_built_in_code():
    check_fields(Example(), "t")
    with pytest.raises(ConfigError, match=r"^t\.epochs must be >= 1, got -1$"):
        check_fields(Example(epochs=-1), "t")


@dataclass(frozen=True)
class Sectioned:
    """A flat config read from nested sections (``key=``), as ``DistillConfig``."""

    lam: float = param(1.0, ge=0, key="lambda")
    cutoff_k: float = param(4.0, gt=0, key="cutoff.k")
    cutoff_mode: str = param("fixed", choices=("fixed", "energy"), key="cutoff.mode")
    deep: int = param(0, ge=0, key="a.b.c")
    width: int = param(8, gt=0, multiple_of=2)
    heads: int = param(4, multiple_of=4)


def test_keyed_fields_read_nested_sections_and_names_that_are_not_identifiers():
    cfg = from_params(
        Sectioned, {"lambda": 2, "cutoff": {"k": 5}, "a": {"b": {"c": 3}}, "width": 4}, "d"
    )
    assert (cfg.lam, cfg.cutoff_k, cfg.cutoff_mode, cfg.deep, cfg.width) == (
        2.0,
        5.0,
        "fixed",
        3,
        4,
    )
    assert from_params(Sectioned, {"cutoff": None}, "d") == Sectioned()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lam": 1}, r"^d\.lam: unknown parameter \(allowed: a, cutoff, heads, lambda, width\)$"),
        ({"cutoff": {"kk": 3}}, r"^d\.cutoff\.kk: unknown parameter \(allowed: k, mode\)$"),
        ({"a": {"b": {"d": 1}}}, r"^d\.a\.b\.d: unknown parameter \(allowed: c\)$"),
        ({"cutoff": "fixed"}, r"^d\.cutoff must be a mapping, got 'fixed'$"),
        ({"lambda": -1}, r"^d\.lambda must be >= 0, got -1\.0$"),
        ({"cutoff": {"k": 0}}, r"^d\.cutoff\.k must be > 0, got 0\.0$"),
        ({"cutoff": {"mode": "x"}}, r"^d\.cutoff\.mode must be one of 'fixed', 'energy', got 'x'$"),
        ({"width": 3}, r"^d\.width must be even, got 3$"),
        ({"heads": 6}, r"^d\.heads must be a multiple of 4, got 6$"),
    ],
)
def test_keyed_and_multiple_of_errors_name_the_parameter_as_written(params, message):
    with pytest.raises(ConfigError, match=message):
        from_params(Sectioned, params, "d")


def test_check_fields_names_a_keyed_field_by_its_parameter():
    with pytest.raises(ConfigError, match=r"^d\.cutoff\.k must be > 0, got -1\.0$"):
        check_fields(Sectioned(cutoff_k=-1.0), "d")


@dataclass(frozen=True)
class Spelled:
    sizes: tuple[int, ...] = param((1, 32), ge=1, convert=one_or_list)
    ratio: float = param(1.5, ge=1, note="how many times lower it must be")
    param_path: str | None = field(default=None, compare=False, metadata={"internal": True})


def test_convert_note_item_bounds_and_param_path():
    cfg = from_params(Spelled, {"sizes": 4}, "s.x")
    assert cfg.sizes == (4,) and cfg.param_path == "s.x"
    assert from_params(Spelled, {"sizes": None}, "s").sizes == ()
    with pytest.raises(ConfigError, match=r"^s\.sizes\[1\] must be >= 1, got 0$"):
        from_params(Spelled, {"sizes": [2, 0]}, "s")
    with pytest.raises(ConfigError, match=r"^s\.ratio must be >= 1, got 0\.5 \(how many times"):
        from_params(Spelled, {"ratio": 0.5}, "s")
    with pytest.raises(ConfigError, match=r"^s\.param_path: unknown parameter"):
        from_params(Spelled, {"param_path": "x"}, "s")


@dataclass(frozen=True)
class Numbers:
    rate: float = param(1.0, gt=0)
    size: int = param(8, ge=1)
    share: int | float = 0.5
    cap: int | None = None
    grid: tuple[int, ...] = (4,)


def test_yaml_style_numbers_are_read_as_numbers():
    cfg = from_params(Numbers, {"rate": "1e-3", "size": 64.0, "cap": 3.0, "grid": [2.0, 3]}, "n")
    assert (cfg.rate, cfg.size, cfg.cap, cfg.grid) == (1e-3, 64, 3, (2, 3))
    assert type(cfg.size) is int and type(cfg.cap) is int and type(cfg.grid[0]) is int
    assert from_params(Numbers, {"rate": "1.0E+6"}, "n").rate == 1e6
    # a union takes a value as its own type first: 0.0 and 1.0 stay floats, 3 an int
    assert [from_params(Numbers, {"share": v}, "n").share for v in (0.0, 1.0, 3)] == [0.0, 1.0, 3]
    assert type(from_params(Numbers, {"share": 1.0}, "n").share) is float


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rate": "1.5"}, r"^n\.rate must be a number, got '1\.5'$"),
        ({"rate": "fast"}, r"^n\.rate must be a number, got 'fast'$"),
        ({"rate": "-1e-3"}, r"^n\.rate must be > 0, got -0\.001$"),
        ({"size": 64.5}, r"^n\.size must be an integer, got 64\.5$"),
        ({"size": "64"}, r"^n\.size must be an integer, got '64'$"),
        ({"size": "1e2"}, r"^n\.size must be an integer, got '1e2'$"),
    ],
)
def test_other_strings_and_fractions_are_still_refused(params, message):
    with pytest.raises(ConfigError, match=message):
        from_params(Numbers, params, "n")


def test_check_fields_takes_no_yaml_spelling_on_an_instance():
    check_fields(Numbers(rate=2), "n")  # an int for a float is a number
    with pytest.raises(ConfigError, match=r"^n\.size must be an integer, got 64\.0$"):
        check_fields(Numbers(size=64.0), "n")
    with pytest.raises(ConfigError, match=r"^n\.rate must be a number, got '1e-3'$"):
        check_fields(Numbers(rate="1e-3"), "n")


@dataclass(frozen=True)
class OptionalList:
    levels: list[int] | None = None


def test_a_bad_item_of_an_optional_list_is_named():
    assert from_params(OptionalList, {"levels": [500, 850.0]}, "o").levels == [500, 850]
    with pytest.raises(ConfigError, match=r"^o\.levels\[1\] must be an integer, got '850'$"):
        from_params(OptionalList, {"levels": [500, "850"]}, "o")
    with pytest.raises(ConfigError, match=r"^o\.levels must be a list or null, got 'x'$"):
        from_params(OptionalList, {"levels": "x"}, "o")
