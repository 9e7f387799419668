"""One modular pipeline per (dataset, student, method), namespaced ``<dataset>.<student>.<method>``.

Each reads the dataset's tensor store and the checkpoints of the teachers its method uses
(``<dataset>.<teacher>.checkpoint``, written by the teacher pipeline) and writes
``<dataset>.<student>.<method>.checkpoint`` and ``.summary``. The baseline ``none`` reads no
teacher, so it can run before (or without) the teachers.
"""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from sdkd_pipeline.distill.config import DistillConfig
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.pipelines.distill.nodes import TEACHER_INPUT_PREFIX, distill_student


def teachers_read(cfg: DistillConfig, teachers: list[str]) -> list[str]:
    """The teacher checkpoints a method's node takes as inputs: the chosen teacher is picked at
    run time (``best`` compares validation errors), so all candidates are inputs."""
    if not cfg.needs_teachers:
        return []
    wanted = list(cfg.teachers) if cfg.multi_teacher else [cfg.teacher]
    unknown = [t for t in wanted if t != "best" and t not in teachers]
    if unknown:
        key = "teachers" if cfg.multi_teacher else "teacher"
        raise ConfigError(
            f"parameter distill.{key} (method {cfg.name!r}): {unknown} are not among the "
            f"trained teachers {list(teachers)} (teacher.models); use one of them"
            + ("" if cfg.multi_teacher else " or 'best'")
        )
    if cfg.multi_teacher:
        return list(cfg.teachers) or list(teachers)
    return list(teachers) if cfg.teacher == "best" else [cfg.teacher]


def node_name(student: str, cfg: DistillConfig) -> str:
    """What the node does, as kedro-viz labels it (its namespace aside): ``distill_unet_with_sdkd``,
    or ``train_unet_without_teacher`` for the ``none`` baseline (``..._as_<variant>`` for a
    variant of it)."""
    if cfg.needs_teachers:
        return f"distill_{student}_with_{cfg.name}"
    return f"train_{student}_without_teacher" + ("" if cfg.name == "none" else f"_as_{cfg.name}")


def create_distill_pipeline(
    dataset: str, student: str, method: str, cfg: DistillConfig, teachers: list[str]
) -> Pipeline:
    func = partial(
        distill_student, dataset=dataset, student=student, method=method, distill_config=cfg
    )
    update_wrapper(func, distill_student)
    read = teachers_read(cfg, teachers)
    inputs = {
        "tensors": "tensors",
        "distill": "params:distill",
        "training": "params:distill.training",
        "shared_training": "params:training",
        "tracking": "params:tracking",
        "progress": "params:data.progress",
        **{f"{TEACHER_INPUT_PREFIX}{t}": f"teacher_{t}_checkpoint" for t in read},
    }
    template = Pipeline(
        [node(func, inputs=inputs, outputs=["checkpoint", "summary"], name=node_name(student, cfg))]
    )
    return pipeline(
        template,
        namespace=f"{dataset}.{student}.{method}",
        inputs={
            "tensors": f"{dataset}.tensors",
            **{f"teacher_{t}_checkpoint": f"{dataset}.{t}.checkpoint" for t in read},
        },
        parameters={
            p: p
            for p in (
                "params:distill",
                "params:distill.training",
                "params:training",
                "params:tracking",
                "params:data.progress",
            )
        },
        tags=["distill", dataset, student, method],
    )


def create_pipeline(
    datasets: list[str],
    students: list[str],
    methods: list[str],
    teachers: list[str],
    distill_params: dict,
) -> Pipeline:
    configs = {m: DistillConfig.from_params(m, distill_params) for m in methods}
    return sum(
        (
            create_distill_pipeline(d, s, m, configs[m], teachers)
            for d in datasets
            for s in students
            for m in methods
        ),
        Pipeline([]),
    )
