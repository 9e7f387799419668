"""The throw-away project of the pipeline tests, for the FNO's teacher-pipeline test."""

from tests.pipelines.conftest import project  # noqa: F401
