"""Evaluation figures (matplotlib): real vs synthetic, nearest-neighbour pairs, t-SNE, utility bars, losses.

Pure functions of arrays and tables; nodes return the figures to the catalog (kedro-viz
previews them) and the report embeds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import ndimage

from synthmed.imaging.figures import _display

UTILITY_SCORE = "balanced_accuracy"


def real_vs_synthetic(real: np.ndarray, real_labels: np.ndarray, synthetic: np.ndarray, synthetic_labels: np.ndarray,
                      class_names: Sequence[str], *, per_class: int, rng: np.random.Generator, title: str,
                      real_outlines: np.ndarray | None = None, synthetic_outlines: np.ndarray | None = None,
                      real_groups: np.ndarray | None = None,
                      synthetic_groups: np.ndarray | None = None) -> Figure:
    """One row per class: ``per_class`` real images, a gap, ``per_class`` synthetic images.

    Args:
        real, synthetic: ``(N, C, H, W)`` float in [-1, 1] (same H, W).
        real_labels, synthetic_labels: class ids.
        real_outlines, synthetic_outlines: ``(N, 1, H, W)`` bool regions (a lesion) drawn as a
            ring ``OUTLINE_GAP`` px outside them, so the ring does not cover what it marks.
        real_groups, synthetic_groups: a group (patient) per image; a row takes its examples
            from different groups first (``spread_choice``).
    """
    classes = [c for c in range(len(class_names)) if np.any(synthetic_labels == c) or np.any(real_labels == c)]
    classes = classes or [0]
    columns = 2 * per_class + 1
    figure, axes = plt.subplots(len(classes), columns, figsize=(0.9 * columns, 1.0 * len(classes) + 0.6), squeeze=False)
    sides = ((real, real_labels, real_outlines, real_groups),
             (synthetic, synthetic_labels, synthetic_outlines, synthetic_groups))
    for row, c in enumerate(classes):
        for side, (images, labels, outlines, groups) in enumerate(sides):
            pool = np.flatnonzero(labels == c) if len(class_names) > 1 else np.arange(len(images))
            chosen = spread_choice(pool, None if groups is None else groups[pool], per_class, rng)
            for k in range(per_class):
                axis = axes[row, k + side * (per_class + 1)]
                axis.axis("off")
                if k < len(chosen):
                    _ringed(axis, images[chosen[k]], None if outlines is None else outlines[chosen[k], 0])
        axes[row, per_class].axis("off")
        axes[row, 0].set_title(f"{class_names[c] if class_names else ''} real", fontsize=7, loc="left")
        axes[row, per_class + 1].set_title("synthetic", fontsize=7, loc="left")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


OUTLINE_GAP = 2  # px between a region and the ring drawn around it


def _ringed(axis, image: np.ndarray, outline: np.ndarray | None) -> None:
    """``image`` (C, H, W) in [-1, 1] on ``axis``, with a red ring ``OUTLINE_GAP`` px outside ``outline``."""
    axis.imshow(_display(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if outline is not None and outline.any():
        axis.contour(ndimage.binary_dilation(outline, iterations=OUTLINE_GAP), levels=[0.5], colors="red",
                     linewidths=0.5)


def spread_choice(pool: np.ndarray, groups: np.ndarray | None, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` of ``pool`` drawn with ``rng``, one per group before any group gives a second.

    ``groups`` (aligned with ``pool``; None entries are each their own group) are, for a
    slice, its patient: without them a grid can show neighbouring slices of one patient,
    which look alike whatever the generator did.
    """
    if not len(pool):
        return np.zeros(0, dtype=np.int64)
    order = rng.permutation(len(pool))
    if groups is None:
        return pool[order[:count]]
    keys = [("row", i) if groups[i] is None else ("group", groups[i]) for i in order]
    rank = np.zeros(len(order), dtype=np.int64)  # 0 for a group's first image in draw order, 1 for its second, ...
    seen: dict[tuple, int] = {}
    for position, key in enumerate(keys):
        rank[position] = seen.get(key, 0)
        seen[key] = rank[position] + 1
    return pool[order[np.argsort(rank, kind="stable")[:count]]]


def paired_outlines(real: np.ndarray, synthetic: np.ndarray, outlines: np.ndarray, *, count: int,
                    rng: np.random.Generator, title: str, groups: np.ndarray | None = None) -> Figure:
    """Samples drawn from real label maps under the real image of the same map, the outlined region
    (a lesion) ringed on both: is it drawn where the map puts it, as the real slice shows it?

    Args:
        real, synthetic: ``(N, C, H, W)`` float in [-1, 1], aligned (row i: one map).
        outlines: ``(N, 1, H, W)`` bool; only rows with an outlined region are shown, up to
            ``count``, drawn with ``rng`` one per group (patient) first.
    """
    pool = np.flatnonzero(np.asarray(outlines).reshape(len(outlines), -1).any(axis=1))
    chosen = spread_choice(pool, None if groups is None else groups[pool], count, rng)
    columns = max(len(chosen), 1)
    figure, axes = plt.subplots(2, columns, figsize=(1.2 * columns + 0.4, 2.9), squeeze=False)
    for k, i in enumerate(chosen):
        for row, images in enumerate((real, synthetic)):
            _ringed(axes[row, k], images[i], outlines[i, 0])
    for axis in axes.ravel():
        axis.axis("off")
    for row, label in enumerate(("real,\nsame map", "synthetic")):
        axes[row, 0].text(-0.1, 0.5, label, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right",
                          fontsize=7)
    figure.suptitle(title + ("" if len(chosen) else " (no map holds one)"), fontsize=8)
    figure.tight_layout()
    return figure


def nearest_pairs(synthetic: np.ndarray, reference: np.ndarray, neighbour: np.ndarray, similarity: np.ndarray,
                  flagged: np.ndarray, *, count: int, title: str) -> Figure:
    """The ``count`` samples most similar to a training image, each above its nearest training image.

    Args:
        neighbour: position in ``reference`` of each sample's nearest training image.
        similarity: the gate's pixel similarity (normalised cross-correlation, 1 = copy).
        flagged: whether the gate flagged the sample.
    """
    order = np.argsort(-similarity)[:count]
    figure, axes = plt.subplots(2, max(len(order), 1), figsize=(1.2 * max(len(order), 1), 2.9), squeeze=False)
    for k, i in enumerate(order):
        axes[0, k].imshow(_display(synthetic[i]), cmap="gray", vmin=0, vmax=1)
        axes[0, k].set_title(f"{similarity[i]:.3f}" + (" FLAG" if flagged[i] else ""), fontsize=7,
                             color="red" if flagged[i] else "black")
        axes[1, k].imshow(_display(reference[int(neighbour[i])]), cmap="gray", vmin=0, vmax=1)
        axes[0, k].axis("off")
        axes[1, k].axis("off")
    axes[0, 0].text(-0.1, 0.5, "sample", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right",
                    fontsize=7)
    axes[1, 0].text(-0.1, 0.5, "nearest\ntraining", transform=axes[1, 0].transAxes, rotation=90, va="center",
                    ha="right", fontsize=7)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    return figure


def tsne_coordinates(real: np.ndarray, real_labels: np.ndarray, synthetic: np.ndarray, synthetic_labels: np.ndarray,
                     class_names: Sequence[str], *, perplexity: float, seed: int) -> pd.DataFrame:
    """2-D t-SNE (scikit-learn) of real and synthetic features together.

    Returns:
        ``x, y, class, kind`` (kind "real" or "synthetic"), one row per image.
    """
    from sklearn.manifold import TSNE

    features = np.concatenate([real, synthetic]).astype(np.float64)
    n = len(features)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 feature vectors, got {n}.")
    # perplexity must be below the number of points (scikit-learn); keep it sensible for small N
    embedding = TSNE(n_components=2, perplexity=float(min(perplexity, (n - 1) / 3)), init="pca",
                     random_state=seed).fit_transform(features)
    labels = np.concatenate([real_labels, synthetic_labels]).astype(int)
    names = [class_names[i] if i < len(class_names) else str(i) for i in labels]
    return pd.DataFrame({"x": embedding[:, 0], "y": embedding[:, 1], "class": names,
                         "kind": ["real"] * len(real) + ["synthetic"] * len(synthetic)})


def tsne_figure(coordinates: pd.DataFrame, class_names: Sequence[str], *, title: str) -> Figure:
    """One panel per class: real (dots) and synthetic (crosses) in the shared t-SNE map."""
    classes = [c for c in class_names if (coordinates["class"] == c).any()] or sorted(coordinates["class"].unique())
    figure, axes = plt.subplots(1, len(classes), figsize=(3.0 * len(classes), 3.1), squeeze=False)
    for axis, name in zip(axes[0], classes):
        axis.scatter(coordinates["x"], coordinates["y"], s=4, color="0.88")  # every point, for context
        for kind, marker, colour in (("real", "o", "tab:blue"), ("synthetic", "x", "tab:red")):
            part = coordinates[(coordinates["class"] == name) & (coordinates["kind"] == kind)]
            axis.scatter(part["x"], part["y"], s=12, marker=marker, color=colour, label=f"{kind} ({len(part)})")
        axis.set_title(name, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.legend(fontsize=7, loc="best")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def utility_bars(summary: pd.DataFrame) -> Figure:
    """Balanced accuracy of each training mode (mean over seeds, bootstrap interval), per family."""
    rows = summary[summary["score"] == UTILITY_SCORE]
    families = list(dict.fromkeys(rows["family"]))
    figure, axes = plt.subplots(1, max(len(families), 1), figsize=(3.6 * max(len(families), 1), 3.4), squeeze=False,
                                sharey=True)
    for axis, family in zip(axes[0], families):
        part = rows[rows["family"] == family]
        x = np.arange(len(part))
        low = (part["mean"] - part["low"]).clip(lower=0).to_numpy()
        high = (part["high"] - part["mean"]).clip(lower=0).to_numpy()
        colours = ["0.6" if m == "real" else "tab:blue" for m in part["mode"]]
        axis.bar(x, part["mean"], yerr=[low, high], color=colours, capsize=3)
        axis.set_xticks(x, part["mode"], rotation=45, ha="right", fontsize=7)
        axis.set_title(f"{family} (test n={int(part['n_test'].iloc[0])})", fontsize=9)
        axis.set_ylim(0, 1)
    axes[0, 0].set_ylabel("balanced accuracy on real test")
    figure.suptitle("Utility: classifier trained on each set, tested on real images (95% bootstrap interval)",
                    fontsize=8)
    figure.tight_layout()
    return figure


def steps_sweep_figure(table: pd.DataFrame, *, title: str) -> Figure:
    """FID against solver steps, one line per sampler with its bootstrap interval, the real-vs-real
    floor as a band, the recommended point circled (``synthmed.metrics.steps_sweep`` table)."""
    figure, axis = plt.subplots(figsize=(5.2, 3.4))
    if len(table):
        first = table.iloc[0]
        axis.axhspan(first["floor_low"], first["floor_high"], color="0.85", label="real-vs-real floor (interval)")
        axis.axhline(first["floor"], color="0.5", linewidth=0.8)
        for sampler, part in table.groupby("sampler", sort=False):
            part = part.sort_values("steps")
            low = (part["fid"] - part["fid_low"]).clip(lower=0).to_numpy()
            high = (part["fid_high"] - part["fid"]).clip(lower=0).to_numpy()
            axis.errorbar(part["steps"], part["fid"], yerr=[low, high], marker="o", capsize=3, label=sampler)
        chosen = table[table["recommended"].astype(bool)]
        axis.scatter(chosen["steps"], chosen["fid"], s=160, facecolors="none", edgecolors="tab:red", zorder=5,
                     label="recommended")
        axis.axhline(float(first["threshold"]), color="tab:red", linestyle=":", linewidth=0.8,
                     label="tolerance threshold")
        axis.set_xscale("log")
        axis.set_xticks(sorted(set(table["steps"].astype(int))), [str(s) for s in sorted(set(table["steps"]))])
        axis.legend(fontsize=7)
    axis.set_xlabel("solver steps")
    axis.set_ylabel(f"FID (N = {int(table['fid_n'].iloc[0])})" if len(table) else "FID")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure
