"""Report figures (matplotlib), returned to the catalog so kedro-viz can preview them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are saved by the catalog, never shown
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def _display(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` float in [-1, 1] -> ``(H, W)`` or ``(H, W, 3)`` in [0, 1] for imshow."""
    shown = np.clip((np.asarray(image, dtype=np.float32) + 1.0) / 2.0, 0.0, 1.0)
    return shown[0] if shown.shape[0] == 1 else np.moveaxis(shown, 0, -1)


def class_grid(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    per_class: int,
    title: str,
    masks: np.ndarray | None = None,
    rng: np.random.Generator,
) -> Figure:
    """One row per class with up to ``per_class`` examples drawn with ``rng``.

    Args:
        images: ``(N, C, H, W)`` float32 in [-1, 1].
        labels: ``(N,)`` class indices into ``class_names``.
        class_names: the name of each class index.
        per_class: columns of the grid.
        title: figure title; each row is labelled with the class name and its count.
        masks: optional ``(N, 1, H, W)`` labels drawn as a contour over each example.
        rng: chooses the examples (seeded by the caller: the figure is reproducible).
    """
    if images.ndim != 4:
        raise ValueError(f"Expected images with shape (N, C, H, W), got {images.shape}.")
    if len(labels) != len(images):
        raise ValueError(f"Expected one label per image, got {len(labels)} labels for {len(images)} images.")
    n_rows = max(len(class_names), 1)
    fig, axes = plt.subplots(n_rows, per_class, figsize=(1.3 * per_class, 1.45 * n_rows + 0.4), squeeze=False)
    for row, name in enumerate(class_names):
        members = np.flatnonzero(labels == row)
        chosen = np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False)) if len(members) else []
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(chosen):
                index = int(chosen[col])
                ax.imshow(_display(images[index]), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                if masks is not None and masks[index].any():
                    ax.contour(masks[index][0] > 0, levels=[0.5], colors="yellow", linewidths=0.6)
        axes[row, 0].set_ylabel(f"{name}\n(n={len(members)})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def loss_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Training losses of every family (columns named ``loss`` or ``loss_*``) against step."""
    figure, axes = plt.subplots(1, max(len(histories), 1), figsize=(3.6 * max(len(histories), 1), 3.0), squeeze=False)
    for axis, (family, history) in zip(axes[0], histories.items()):
        for column in [c for c in history.columns if c == "loss" or c.startswith("loss_")]:
            axis.plot(history["step"], history[column], label=column, linewidth=1)
        axis.set_title(family, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.set_yscale("log")
        axis.legend(fontsize=6)
    figure.suptitle("Training losses", fontsize=9)
    figure.tight_layout()
    return figure
