"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# `sample_data` writes data/01_raw/sample and is run on purpose (DVC's first stage, or
# `kedro run --pipelines sample_data`); the default pipeline processes whatever
# `raw_sources` points at, so a team's own data is never overwritten by the sample.
DATA_PIPELINES = ("ingestion", "preprocessing", "extraction")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DATA_PIPELINES if name in pipelines), Pipeline([])
    )
    return pipelines
