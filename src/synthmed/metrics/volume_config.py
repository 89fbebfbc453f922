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
        seed: weights and batch order.
        device: "auto" (CUDA when present), "cpu" or "cuda".
    """

    width: int = 8
    steps: int = 200
    batch_size: int = 4
    learning_rate: float = 0.003
    threshold: float = 0.5
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("width", "steps", "batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"study_3d.evaluation.segmenter.{name} must be a positive integer, got "
                                 f"{getattr(self, name)!r}.")
        if not is_number(self.threshold) or not 0.0 < self.threshold < 1.0:
            raise ValueError(f"study_3d.evaluation.segmenter.threshold must be in (0, 1), got {self.threshold!r}.")
