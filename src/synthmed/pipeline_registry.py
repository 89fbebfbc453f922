"""Project pipelines."""

from __future__ import annotations

import importlib
import warnings
from importlib import resources

from kedro.pipeline import Pipeline

# Kedro warns, on every command, when a node reads a dataset named with a dot outside its own
# namespace. Here that is by design: one namespace per family or source writes `ddpm.generator`,
# `slices.feature_encoder` and the like, and the cross-family nodes (evaluation, rebalancing,
# studies) read them by those names, as Kedro's namespaces produce them.
warnings.filterwarnings("ignore", message=r"One or more dataset names contain '\.' characters", category=UserWarning)

# The order of the DVC stages (dvc.yaml). `kedro run` (and kedro-viz's default view) is all of
# them; `sample_cohort` writes only its own folder, data/01_raw/cohort, so a team's `raw_sources`
# is never overwritten by it.
PIPELINE_ORDER = ("sample_cohort", "ingestion", "preprocessing", "extraction", "training", "sampling",
                  "feature_encoders", "rebalancing", "evaluation", "release")
# `kedro run --pipelines data`: what `raw_sources` points at, up to the model inputs.
DATA_PIPELINES = ("ingestion", "preprocessing", "extraction")
# Run only when named: `sample_data` builds the one-template sample (data/01_raw/sample) that
# conf/template reads; `study_mask_to_image`, `study_inpainting`, `study_lesion_patches` and
# `study_class_multiplication` (issue 10) and `study_3d` (issue 11) are studies run on request
# after the default pipeline (they read its outputs).
ON_REQUEST = ("sample_data", "study_mask_to_image", "study_3d", "study_inpainting", "study_lesion_patches",
              "study_class_multiplication")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects: each pipeline package, ``data``
        (ingestion, preprocessing, extraction) and ``__default__`` (every pipeline, in the
        order of ``PIPELINE_ORDER``, then any other pipeline package by name, except ``ON_REQUEST``).
    """
    pipelines = _pipeline_packages()
    ordered = [name for name in PIPELINE_ORDER if name in pipelines]
    ordered += sorted(set(pipelines) - set(ordered) - {"__default__"} - set(ON_REQUEST))
    pipelines["data"] = sum((pipelines[name] for name in DATA_PIPELINES if name in pipelines), Pipeline([]))
    pipelines["__default__"] = sum((pipelines[name] for name in ordered), Pipeline([]))
    return pipelines


def _pipeline_packages() -> dict[str, Pipeline]:
    """Every package under ``synthmed.pipelines``, by name, from its ``create_pipeline()``.

    Not ``kedro.framework.project.find_pipelines``: in Kedro 1.7 it loads only the packages named
    on the command line (``--pipelines``) and raises for a name that is no package, so the
    composite ``data`` (and any name built here) could not be run. Loading every package is
    cheap: node functions are imported when a node runs (``synthmed.core.lazy``).
    """
    found: dict[str, Pipeline] = {}
    for entry in sorted(resources.files("synthmed.pipelines").iterdir(), key=lambda e: e.name):
        if not entry.is_dir() or not entry.joinpath("__init__.py").is_file():
            continue
        module = importlib.import_module(f"synthmed.pipelines.{entry.name}")
        create = getattr(module, "create_pipeline", None)
        if create is None:
            raise ImportError(f"synthmed.pipelines.{entry.name} ({module.__file__}) has no create_pipeline(): "
                              "every pipeline package exposes one (see the other packages' __init__.py).")
        pipeline = create()
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"synthmed.pipelines.{entry.name}.create_pipeline() returned {type(pipeline).__name__}, "
                            "expected a kedro Pipeline.")
        found[entry.name] = pipeline
    return found
