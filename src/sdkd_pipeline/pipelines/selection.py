"""Which datasets the registry builds pipelines for.

The list is the parameter ``data.datasets``. During a Kedro session the hook in ``hooks.py``
records the resolved parameters (``--params`` overrides included) before the registry is read;
outside a session (``kedro viz``, a notebook) the registry falls back to reading the config files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sdkd_pipeline.config_utils import list_param
from sdkd_pipeline.data.sources import DATASETS as KNOWN_DATASETS
from sdkd_pipeline.errors import ConfigError

_parameters: dict[str, Any] | None = None

_EXAMPLES = {
    "data.datasets": "navier_stokes+rayleigh_benard",
    "teacher.models": "st_alternet+simvp",
    "distill.students": "unet",
    "distill.methods": "none+sdkd",
}


_ABSENT = object()


def _names(value: Any, param: str) -> list[str]:
    """A list-of-names parameter (absent: none); one given empty (``--params distill.methods=``
    gives null) is an error naming it, not a ``TypeError`` deep inside the registry."""
    if value is _ABSENT:
        return []
    names = list_param(value) if value is not None else []
    if not names:
        raise ConfigError(
            f"parameter {param} is empty: name at least one, e.g. "
            f'--params "{param}={_EXAMPLES.get(param, "...")}"'
        )
    return names


def set_parameters(params: dict[str, Any]) -> None:
    """Record the session's parameters and make Kedro rebuild its pipelines from them."""
    global _parameters
    _parameters = dict(params)
    from kedro.framework.project import pipelines

    # The project pipelines are cached after the first read; a new session (or a test running
    # several sessions in one process) may enable other datasets.
    pipelines._is_data_loaded = False


def _parameters_from_config() -> dict[str, Any]:
    from kedro.framework.project import settings

    root = Path(os.environ.get("KEDRO_PROJECT_PATH", Path.cwd()))
    # the project's own loader settings: a bare loader would also drop the project's resolvers
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(root / "conf"),
        env=os.environ.get("KEDRO_ENV"),
        **settings.CONFIG_LOADER_ARGS,
    )
    try:
        return dict(loader["parameters"])
    except Exception:
        return {}


def enabled_datasets(params: dict[str, Any] | None = None) -> list[str]:
    """The enabled dataset names, validated against the known ones."""
    if params is None:
        params = _parameters if _parameters is not None else _parameters_from_config()
    names = (params.get("data") or {}).get("datasets", ["navier_stokes", "rayleigh_benard"])
    names = _names(names, "data.datasets")
    unknown = [n for n in names if n not in KNOWN_DATASETS]
    if unknown:
        raise ConfigError(
            f"parameter data.datasets: unknown dataset name(s) {unknown}; "
            f"known datasets are {list(KNOWN_DATASETS)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter data.datasets: duplicate names in {names}")
    return list(names)


def datasets_with(section: str, datasets: list[str]) -> list[str]:
    """Those of ``datasets`` whose parameters have ``section`` (e.g. ``download``)."""
    params = _parameters if _parameters is not None else _parameters_from_config()
    return [d for d in datasets if (params.get(d) or {}).get(section)]


def enabled_models(role: str, params: dict[str, Any] | None = None) -> list[str]:
    """The models listed in ``<role>.models`` (teacher or student), checked against the
    registry and the role."""
    from sdkd_pipeline.models.registry import MODEL_ROLES

    if params is None:
        params = _parameters if _parameters is not None else _parameters_from_config()
    names = _names((params.get(role) or {}).get("models", _ABSENT), f"{role}.models")
    wrong = [n for n in names if MODEL_ROLES.get(n) != role]
    if wrong:
        known = [n for n, r in MODEL_ROLES.items() if r == role]
        raise ConfigError(f"parameter {role}.models: {wrong} are not {role} models; known: {known}")
    return list(names)


def _stage_datasets(
    section: str, available: list[str], available_from: str, params: dict[str, Any], hint: str
) -> list[str]:
    """``<section>.datasets``: defaults to ``available``; names not in it are left out with a
    warning (e.g. ``kedro run --pipelines=data --params data.datasets=weatherbench`` is not
    refused because the default trains on Navier-Stokes). An unknown name is an error."""
    wanted = (params.get(section) or {}).get("datasets")
    datasets = _names(wanted, f"{section}.datasets") if wanted else list(available)
    unknown = [d for d in datasets if d not in KNOWN_DATASETS]
    if unknown:
        raise ConfigError(
            f"parameter {section}.datasets: unknown dataset name(s) {unknown}; "
            f"known datasets are {list(KNOWN_DATASETS)}"
        )
    if len(set(datasets)) != len(datasets):
        raise ConfigError(f"parameter {section}.datasets: duplicate names in {datasets}")
    outside = [d for d in datasets if d not in available]
    if outside:
        instead = (
            f'use --params "{section}.datasets={"+".join(available)}" for the available ones, '
            if available
            else ""
        )
        empty = not any(d in available for d in datasets)
        message = (
            f"{section}.datasets: {outside} left out: not in {available_from} {available} "
            f"({instead}{hint})"
        )
        logging.getLogger(__name__).warning(
            "%s%s", message, f"; the {section} stage has nothing to do in this run" if empty else ""
        )
        if empty:
            EMPTY_STAGES[section] = message
    if not outside or any(d in available for d in datasets):
        EMPTY_STAGES.pop(section, None)
    return [d for d in datasets if d in available]


# sections (``teacher``, ``distill``) whose stage has no dataset in the current selection, with
# the reason; ``hooks.EnabledDatasetsHook`` ends such a run with a summary line
EMPTY_STAGES: dict[str, str] = {}


def teacher_datasets(params: dict[str, Any] | None = None) -> list[str]:
    """The datasets the teacher (and spectral) pipelines train on: ``teacher.datasets``,
    defaulting to every enabled dataset (``data.datasets``)."""
    if params is None:
        params = _parameters if _parameters is not None else _parameters_from_config()
    return _stage_datasets(
        "teacher",
        enabled_datasets(params),
        "data.datasets",
        params,
        "or enable the left-out ones there",
    )


def distill_selection(
    params: dict[str, Any] | None = None,
) -> tuple[list[str], list[str], list[str], dict[str, Any]]:
    """``(datasets, students, methods, distill parameters)`` of the distill pipeline.

    ``distill.datasets`` defaults to every dataset teachers are trained on; names outside those
    are left out with a warning (they have no teachers). An unknown name is an error.
    """
    from sdkd_pipeline.models.registry import MODEL_ROLES

    if params is None:
        params = _parameters if _parameters is not None else _parameters_from_config()
    distill = dict(params.get("distill") or {})
    datasets = _stage_datasets(
        "distill",
        teacher_datasets(params),
        "the teachers' datasets",
        params,
        "or train teachers for the left-out ones: add them to teacher.datasets",
    )
    students = _names(distill.get("students", _ABSENT), "distill.students")
    wrong = [n for n in students if MODEL_ROLES.get(n) != "student"]
    if wrong:
        known = [n for n, r in MODEL_ROLES.items() if r == "student"]
        raise ConfigError(
            f"parameter distill.students: {wrong} are not student models; known: {known}"
        )
    methods = _names(distill.get("methods", _ABSENT), "distill.methods")
    for label, names in (("students", students), ("methods", methods)):
        if len(set(names)) != len(names):
            raise ConfigError(f"parameter distill.{label}: duplicate names in {names}")
    return datasets, students, methods, distill
