"""The schema of the whole parameter tree, checked once before any node runs.

``PARAMETER_SCHEMA`` maps the dotted path of every parameter block to the frozen dataclass
its node builds (``ddpm.training`` -> ``TrainingConfig``). ``*`` stands for any key (one
entry per modality or source), ``[]`` for every row of a list. Blocks that no node builds
into a dataclass (the grouping blocks ``extraction`` and ``<family>``, the sample-data and
preview settings, sampling plan rows) get a small dataclass here, so that every block has
one, and so one checker (``synthmed.core.config``) applies to all of them.

``validate_parameters`` walks the tree: unknown block or key names are errors that list the
valid ones (and the closest name: ``ddpm.trainng`` -> "did you mean 'training'?"), then every
block is built with ``from_params``, which checks types and the dataclasses' own rules. The
project hook ``ParameterCheckHook`` runs it after the context is created, on the parameters
with ``--params`` overrides applied, so a misspelt or mistyped parameter stops the run before
any node or MLflow run starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthmed.core.config import check_fields, from_params, unknown_keys_message

# Per-modality blocks override the "default" entry key by key, so they may be partial.
PARTIAL_BLOCKS = frozenset({"preprocessing.intensity.*", "preprocessing.geometry.*"})


class ParameterError(ValueError):
    """The parameter tree does not match the schema; the message lists every problem."""


@dataclass(frozen=True)
class BrainSampleParams:
    """``params:sample_data.brain`` (read by ``sample_data.nodes.build_brain_sample``)."""

    tissue_threshold: float


@dataclass(frozen=True)
class SampleDataParams:
    brain: Mapping[str, Any]
    fundus: Mapping[str, Any]


@dataclass(frozen=True)
class PreviewParams:
    """``params:extraction.preview``: examples per class in the preview figures."""

    per_class: int
    seed: int


@dataclass(frozen=True)
class ExtractionParams:
    slices: Mapping[str, Any]
    patches: Mapping[str, Any]
    lesion_patches: Mapping[str, Any]
    volumes: Mapping[str, Any]
    preview: Mapping[str, Any]


@dataclass(frozen=True)
class FamilyParams:
    """``params:<family>``: one generator family's blocks for training and sampling."""

    family: str
    run: Mapping[str, Any]
    model: Mapping[str, Any]
    training: Mapping[str, Any]
    sampling: Mapping[str, Any]


@dataclass(frozen=True)
class PlanRow:
    """One row of ``params:<family>.sampling.plan`` (``sampling.nodes.sampling_plan``)."""

    count: int
    condition: str = "class"
    label: str = ""
    case: str = ""


def _schema() -> dict[str, type]:
    """Imported late: the configuration dataclasses live with the code that uses them (and
    pull in torch); importing this module stays cheap."""
    from synthmed.core.splits import SplitConfig
    from synthmed.generators.base import SamplerSpec
    from synthmed.generators.configs import FAMILY_CONFIGS
    from synthmed.generators.run import RunConfig
    from synthmed.generators.sampling import SamplingConfig, ThroughputConfig
    from synthmed.generators.training import TrainingConfig
    from synthmed.imaging.cohort_config import CohortConfig
    from synthmed.imaging.extraction import PatchConfig, SliceConfig
    from synthmed.imaging.fundus_sample import FundusSampleConfig
    from synthmed.imaging.intensity import IntensitySpec
    from synthmed.imaging.lesion_patches import LesionPatchExtraction, Normalisation, PatchSampling
    from synthmed.imaging.lesion_placement import LesionPlanRow
    from synthmed.imaging.slicing import PatchSpec
    from synthmed.imaging.volumes import VolumeConfig
    from synthmed.metrics.detectability import DetectabilityConfig
    from synthmed.metrics.features import FeatureNetworkConfig, FitConfig
    from synthmed.metrics.utility import UtilityConfig
    from synthmed.metrics.volume_config import PlaneEncoderConfig, SegmenterConfig
    from synthmed.pipelines.ingestion.config import IngestionConfig
    from synthmed.pipelines.preprocessing.config import GeometrySpec, PreprocessingConfig
    from synthmed.pipelines.study_3d import config as study_3d
    from synthmed.privacy.dicom_deid_config import DicomDeidConfig
    from synthmed.privacy.memorisation import GateConfig
    from synthmed.privacy.pixel_checks import PixelChecksConfig
    from synthmed.protocols import class_multiplication as class_multiplication
    from synthmed.protocols.encoders import EncoderConfig, SourceConfig
    from synthmed.protocols.evaluation import EvaluationConfig, FidelityConfig, FigureConfig, ReaderKitConfig
    from synthmed.protocols.inpainting import InpaintingConfig, InpaintingEvaluation, PublishedStructure
    from synthmed.protocols.lesion_patches import LesionPatchesConfig, StudyEvaluation
    from synthmed.protocols.mask_to_image import MaskToImageConfig
    from synthmed.protocols.rebalancing import RebalancingConfig
    from synthmed.protocols.steps_sweep import StepsSweepConfig

    schema: dict[str, type] = {
        "sample_data": SampleDataParams,
        "sample_data.brain": BrainSampleParams,
        "sample_data.fundus": FundusSampleConfig,
        "sample_cohort": CohortConfig,
        "ingestion": IngestionConfig,
        "preprocessing": PreprocessingConfig,
        "preprocessing.deid": DicomDeidConfig,
        "preprocessing.intensity.*": IntensitySpec,
        "preprocessing.intensity.default": IntensitySpec,
        "preprocessing.geometry.*": GeometrySpec,
        "preprocessing.split": SplitConfig,
        "preprocessing.pixels": PixelChecksConfig,
        "extraction": ExtractionParams,
        "extraction.slices": SliceConfig,
        "extraction.patches": PatchConfig,
        "extraction.patches.patch": PatchSpec,
        "extraction.lesion_patches": LesionPatchExtraction,
        "extraction.lesion_patches.patches": PatchSampling,
        "extraction.lesion_patches.normalisation": Normalisation,
        "extraction.volumes": VolumeConfig,
        "extraction.preview": PreviewParams,
        "rebalancing": RebalancingConfig,
        "rebalancing.sampler": SamplerSpec,
        "evaluation": EvaluationConfig,
        "evaluation.sources.*": SourceConfig,
        "evaluation.encoder": EncoderConfig,
        "evaluation.encoder.fit": FitConfig,
        "evaluation.feature_network": FeatureNetworkConfig,
        "evaluation.fidelity": FidelityConfig,
        "evaluation.utility": UtilityConfig,
        "evaluation.detectability": DetectabilityConfig,
        "evaluation.memorisation": GateConfig,
        "evaluation.figures": FigureConfig,
        "evaluation.reader_kit": ReaderKitConfig,
        "evaluation.steps_sweep": StepsSweepConfig,
        "study_mask_to_image": MaskToImageConfig,
        "study_mask_to_image.model": FAMILY_CONFIGS["pix2pix"],
        "study_mask_to_image.training": TrainingConfig,
        "study_lesion_patches": LesionPatchesConfig,
        "study_lesion_patches.evaluation": StudyEvaluation,
        "study_lesion_patches.evaluation.encoder": EncoderConfig,
        "study_lesion_patches.evaluation.encoder.fit": FitConfig,
        "study_lesion_patches.evaluation.utility": UtilityConfig,
        "study_class_multiplication": class_multiplication.ClassMultiplicationConfig,
        "study_class_multiplication.model": FAMILY_CONFIGS["ddpm"],
        "study_class_multiplication.training": TrainingConfig,
        "study_class_multiplication.multiplication": class_multiplication.Multiplication,
        "study_class_multiplication.multiplication.sampler": SamplerSpec,
        "study_class_multiplication.evaluation": class_multiplication.StudyEvaluation,
        "study_class_multiplication.evaluation.utility": UtilityConfig,
        "study_class_multiplication.evaluation.detectability": DetectabilityConfig,
        "study_class_multiplication.evaluation.memorisation": GateConfig,
        "study_class_multiplication.evaluation.reader_kit": class_multiplication.ReaderKit,
        "study_class_multiplication.published": class_multiplication.PublishedFigure,
        "study_3d": study_3d.StudyConfig,
        "study_3d.run": RunConfig,
        "study_3d.model": FAMILY_CONFIGS["pix2pix3d"],
        "study_3d.training": TrainingConfig,
        "study_3d.plan[]": LesionPlanRow,
        "study_3d.evaluation": study_3d.StudyEvaluationConfig,
        "study_3d.evaluation.encoder": PlaneEncoderConfig,
        "study_3d.evaluation.segmenter": SegmenterConfig,
        "study_3d.evaluation.fid": study_3d.FidConfig,
        "study_3d.evaluation.utility": study_3d.UtilityConfig3D,
        "study_3d.evaluation.memorisation": study_3d.VolumeGateConfig,
        "study_3d.evaluation.reader_kit": study_3d.VolumeReaderKitConfig,
        "study_inpainting": InpaintingConfig,
        "study_inpainting.evaluation": InpaintingEvaluation,
        "study_inpainting.published[]": PublishedStructure,
        "study_inpainting.diffusion_model": FAMILY_CONFIGS["ddpm"],
        "study_inpainting.diffusion_training": TrainingConfig,
        "study_inpainting.pix2pix_model": FAMILY_CONFIGS["pix2pix"],
        "study_inpainting.pix2pix_training": TrainingConfig,
    }
    # One block per registered generator family (the registry checks that FAMILY_CONFIGS lists them all).
    for name, config_cls in FAMILY_CONFIGS.items():
        schema |= {
            name: FamilyParams,
            f"{name}.run": RunConfig,
            f"{name}.run.preview_sampler": SamplerSpec,
            f"{name}.model": config_cls,
            f"{name}.training": TrainingConfig,
            f"{name}.sampling": SamplingConfig,
            f"{name}.sampling.sampler": SamplerSpec,
            f"{name}.sampling.throughput": ThroughputConfig,
            f"{name}.sampling.plan[]": PlanRow,
        }
    return schema


_SCHEMA: dict[str, type] | None = None


def parameter_schema() -> dict[str, type]:
    """``PARAMETER_SCHEMA``: block path -> configuration dataclass (built once)."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = _schema()
    return _SCHEMA


def __getattr__(name: str) -> Any:
    # `from synthmed.parameters import PARAMETER_SCHEMA` builds the schema on first use.
    if name == "PARAMETER_SCHEMA":
        return parameter_schema()
    raise AttributeError(name)


def top_level_blocks() -> list[str]:
    return sorted(path for path in parameter_schema() if "." not in path and "[" not in path)


def validate_parameters(params: Mapping[str, Any]) -> None:
    """Check the whole parameter tree against ``PARAMETER_SCHEMA``.

    Raises:
        ParameterError: listing every unknown block or key (with the valid names), missing
            key and value of the wrong type or range, each with its dotted path.
    """
    schema = parameter_schema()
    errors: list[str] = []
    blocks = top_level_blocks()
    unknown = sorted(str(k) for k in params if k not in blocks)
    if unknown:
        errors.append(
            unknown_keys_message(unknown, blocks, "")
            .replace("Unknown key(s)", "Unknown parameter block(s)", 1)
            .replace(" in parameters ''; valid keys", "; valid blocks", 1)
        )
    for name in blocks:
        if name in params:
            _check_block(schema, name, params[name], errors)
    if errors:
        raise ParameterError(
            f"{len(errors)} problem(s) in the parameters (conf/<env>/parameters_*.yml and --params):\n  - "
            + "\n  - ".join(errors)
        )


def _schema_entry(schema: Mapping[str, type], path: str) -> tuple[str, type] | None:
    """The schema key and dataclass for the block at ``path`` (exact path before ``*``)."""
    if path in schema:
        return path, schema[path]
    parent, _, _ = path.rpartition(".")
    wildcard = f"{parent}.*"
    if wildcard in schema:
        return wildcard, schema[wildcard]
    return None


def _check_block(schema: Mapping[str, type], path: str, value: Any, errors: list[str]) -> None:
    key, cls = _schema_entry(schema, path) or (None, None)
    if cls is None:
        return
    partial = key in PARTIAL_BLOCKS
    try:
        if partial:
            check_fields(cls, value, path, partial=True)
        else:
            from_params(cls, value, path)
    except (ValueError, TypeError) as exc:
        errors.append(str(exc))
    if not isinstance(value, Mapping):
        return
    # Sub-blocks: fields that have their own schema entry (a block, every key of a
    # per-modality mapping, or every row of a list).
    for name in (f.name for f in dataclasses.fields(cls)):
        if name not in value:
            continue
        sub, sub_value = f"{path}.{name}", value[name]
        if f"{sub}[]" in schema and isinstance(sub_value, (list, tuple)):
            for i, row in enumerate(sub_value):
                try:
                    from_params(schema[f"{sub}[]"], row, f"{sub}[{i}]")
                except (ValueError, TypeError) as exc:
                    errors.append(str(exc))
        elif sub in schema:
            _check_block(schema, sub, sub_value, errors)
        elif f"{sub}.*" in schema and isinstance(sub_value, Mapping):
            for child, child_value in sub_value.items():
                _check_block(schema, f"{sub}.{child}", child_value, errors)
