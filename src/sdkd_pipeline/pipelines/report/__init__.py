"""The report pipeline: one Markdown page per dataset gathering what the other stages wrote
(``<dataset>.run_report``), the last node of ``kedro run``."""

from sdkd_pipeline.pipelines.report.pipeline import create_pipeline

__all__ = ["create_pipeline"]
