"""The configurations of the volume metrics (``synthmed.metrics.volumes``), importable without torch:
the parameter check builds ``study_3d.evaluation.encoder`` and ``.segmenter`` before every run."""

from __future__ import annotations

from dataclasses import dataclass

from synthmed.core.validation import is_int, is_number


@dataclass(frozen=True)
class PlaneEncoderConfig:
    """``params:study_3d.evaluation.encoder``: the 2D feature network of the 2.5D FID."""

    width: int = 16
    feature_dim: int = 64
    seed: int = 0
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 0.002
    min_brain_fraction: float = 0.1
    device: str = "auto"

    def __post_init__(self) -> None:
        if not is_number(self.min_brain_fraction) or not 0.0 <= self.min_brain_fraction < 1.0:
            raise ValueError(f"study_3d.evaluation.encoder.min_brain_fraction must be in [0, 1), got "
                             f"{self.min_brain_fraction!r}.")


@dataclass(frozen=True)
class SegmenterConfig:
    """``params:study_3d.evaluation.segmenter``: the small 3D lesion segmenter.

    Args:
        width: channels of each convolution.
        steps, batch_size, learning_rate: AdamW training on the real training volumes.
        threshold: lesion probability from which a voxel is lesion.
        pos_weight: weight of the lesion voxels in the BCE term (lesions are a fraction of a percent
            of the voxels; 1 = unweighted).
        seed: weights and batch order.
        device: "auto" (CUDA when present), "cpu" or "cuda".
    """

    width: int = 8
    steps: int = 200
    batch_size: int = 4
    learning_rate: float = 0.003
    threshold: float = 0.5
    pos_weight: float = 1.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if not is_number(self.pos_weight) or self.pos_weight <= 0:
            raise ValueError(f"study_3d.evaluation.segmenter.pos_weight must be a number > 0, got {self.pos_weight!r}.")
        for name in ("width", "steps", "batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"study_3d.evaluation.segmenter.{name} must be a positive integer, got "
                                 f"{getattr(self, name)!r}.")
        if not is_number(self.threshold) or not 0.0 < self.threshold < 1.0:
            raise ValueError(f"study_3d.evaluation.segmenter.threshold must be in (0, 1), got {self.threshold!r}.")


@dataclass(frozen=True)
class IntensityControlConfig:
    """``params:study_3d.evaluation.control``: how a synthetic volume's lesion is found.

    Args:
        method: ``intensity`` (`synthmed.metrics.volumes.intensity_candidates`: voxels brighter
            than their tissue by ``threshold``, inside a window around the requested lesion) or
            ``segmenter`` (the small 3D segmenter over the whole volume).
        margin_mm: the window's radius is the requested lesion's equivalent-sphere radius plus this.
        sigma_vox: Gaussian smoothing of the image before the threshold (0 = none).
        threshold: tissue-relative intensity above which a voxel is lesion; None = calibrated on the
            training split's real lesions (the value with the best mean Dice, over ``thresholds``).
        thresholds: ``[start, stop, step]`` of the calibration grid.
        lesion_brighter: the lesion is brighter than tissue (the cohort's FLAIR); False: darker (T1w).
        contrast_shell_mm: the lesion contrast (`synthmed.metrics.volumes.lesion_contrast_sd`) compares
            the lesion with the grey and white matter within this distance of it.
        visible_contrast_sd: a lesion whose contrast (in units of the surrounding tissue's std) reaches
            this counts as visible; the study warns about plan rows whose lesions stay below it.
    """

    method: str = "intensity"
    margin_mm: float = 6.0
    sigma_vox: float = 0.0
    threshold: float | None = None
    thresholds: tuple[float, float, float] = (0.2, 2.0, 0.05)
    lesion_brighter: bool = True
    contrast_shell_mm: float = 12.0
    visible_contrast_sd: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in ("intensity", "segmenter"):
            raise ValueError(f"study_3d.evaluation.control.method must be 'intensity' or 'segmenter', got "
                             f"{self.method!r}.")
        for name in ("margin_mm", "sigma_vox", "visible_contrast_sd"):
            if not is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"study_3d.evaluation.control.{name} must be a number >= 0, got "
                                 f"{getattr(self, name)!r}.")
        if not is_number(self.contrast_shell_mm) or self.contrast_shell_mm <= 0:
            raise ValueError(f"study_3d.evaluation.control.contrast_shell_mm must be a number > 0, got "
                             f"{self.contrast_shell_mm!r}.")
        if self.threshold is not None and not is_number(self.threshold):
            raise ValueError(f"study_3d.evaluation.control.threshold must be a number or null, got {self.threshold!r}.")
        grid = tuple(self.thresholds)
        if len(grid) != 3 or not all(is_number(v) for v in grid) or not (grid[0] < grid[1] and grid[2] > 0):
            raise ValueError(f"study_3d.evaluation.control.thresholds must be [start, stop, step] with start < stop "
                             f"and step > 0, got {list(grid)}.")
