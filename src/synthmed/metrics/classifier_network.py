"""The domain encoder's network, ``ConvClassifier`` (re-exported by ``synthmed.metrics.features``).

Apart from ``features`` so that importing the classifier's configuration (the parameter check
does before every run) does not import torch; ``features`` imports this module when a
classifier is built.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from synthmed.metrics.features import ClassifierConfig


class ConvClassifier(nn.Module):
    """Strided 3x3 conv blocks (GroupNorm, SiLU) -> global average -> feature layer -> classes.

    ``features(x)`` is the penultimate layer ``(N, feature_dim)``: the domain feature space.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        c_in = config.channels
        levels = int(math.log2(config.image_px // 4))
        for level in range(levels):
            c_out = config.width * min(2**level, 8)
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU(),
                       nn.Conv2d(c_out, c_out, 3, stride=2, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU()]
            c_in = c_out
        self.body = nn.Sequential(*blocks)
        self.feature = nn.Linear(c_in, config.feature_dim)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(config.feature_dim, config.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(self.body(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Features(nn.Module):
    """``ConvClassifier.features`` as a module (what ``FeatureNetwork`` calls)."""

    def __init__(self, model: ConvClassifier):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)
