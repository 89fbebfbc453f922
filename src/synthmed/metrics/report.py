"""The evaluation report: one self-contained HTML page per run (figures embedded as PNG).

Every number is shown with its N and, for FID/KID/PRDC/diversity, beside its real-vs-real
floor; the same numbers are in ``data/08_reporting/metrics.json`` (DVC) and MLflow.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from markupsafe import Markup

from synthmed.core.templates import render


def number(value: Any, digits: int = 4) -> str:
    """A table cell: significant digits, ``n/a`` for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        if float(value).is_integer() and abs(value) >= 1:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def html_table(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table (escaped; numbers formatted by ``number``)."""
    return frame.to_html(index=False, escape=True, na_rep="n/a", formatters={c: number for c in frame.columns},
                         border=0)


def with_interval(metrics: Mapping[str, float], name: str) -> str:
    """``value [low, high]`` for a metric with ``_low``/``_high`` companions."""
    if name not in metrics:
        return "n/a"
    if f"{name}_low" in metrics:
        return f"{number(metrics[name])} [{number(metrics[f'{name}_low'])}, {number(metrics[f'{name}_high'])}]"
    return number(metrics[name])


def fidelity_table(metrics: Mapping[str, float]) -> pd.DataFrame:
    """Each fidelity metric beside its real-vs-real floor, with N."""
    rows = [
        ("FID", with_interval(metrics, "fid"), with_interval(metrics, "fid_floor_halves"),
         with_interval(metrics, "fid_floor_neighbour_slices"), metrics.get("fid_n")),
        ("KID", f"{number(metrics.get('kid'))} ± {number(metrics.get('kid_std'))}",
         f"{number(metrics.get('kid_floor_halves'))} ± {number(metrics.get('kid_floor_halves_std'))}", "",
         metrics.get("fid_n")),
    ]
    rows += [(name, number(metrics.get(name)), number(metrics.get(f"{name}_floor_halves")), "", metrics.get("fid_n"))
             for name in ("precision", "recall", "density", "coverage")]
    rows.append(("diversity (mean pairwise MS-SSIM, lower = more diverse)", number(metrics.get("diversity_ms_ssim")),
                 number(metrics.get("diversity_ms_ssim_real")), "", metrics.get("n_synthetic")))
    for name in ("mse", "ssim", "psnr"):
        if f"paired_{name}" in metrics:
            rows.append((f"paired {name.upper()} vs the real image of the same mask",
                         with_interval(metrics, f"paired_{name}"),
                         "", "", metrics.get(f"paired_{name}_n")))
    return pd.DataFrame(rows, columns=["metric", "synthetic vs real", "floor: real vs real (halves)",
                                       "floor: neighbouring slices", "N"])


def utility_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Seed means with intervals; difference to real-only for the bootstrapped scores."""
    rows = []
    for row in summary.itertuples():
        if not (row.score in ("balanced_accuracy", "auroc") or row.score.startswith("f1.")):
            continue
        value = f"{number(row.mean)} ± {number(row.std)}" if math.isnan(row.low) \
            else f"{number(row.mean)} [{number(row.low)}, {number(row.high)}]"
        delta = "" if math.isnan(row.delta_low) or row.mode == "real" \
            else f"{number(row.delta_vs_real)} [{number(row.delta_low)}, {number(row.delta_high)}]"
        rows.append({"mode": row.mode, "score": row.score, "value": value, "difference to real only": delta,
                     "n test": row.n_test})
    return pd.DataFrame(rows)


def memorisation_table(metrics: Mapping[str, float]) -> pd.DataFrame:
    names = ("calibrated", "candidate_count", "flagged_count", "flagged_fraction", "pixel_threshold",
             "feature_threshold",
             "max_pixel_similarity", "median_pixel_similarity", "held_out_max_pixel_similarity", "held_out_count",
             "self_test_recall", "planted_count", "planted_missed")
    return pd.DataFrame([{"measure": n, "value": number(metrics.get(n))} for n in names])


def png64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def render_report(*, title: str, comparison: pd.DataFrame, families: Sequence[Mapping[str, Any]],
                  shared_figures: Sequence[tuple[str, bytes]], gate: Mapping[str, Any] | None, reader_images: int,
                  level: float, checkpoints: pd.DataFrame | None = None) -> str:
    """The HTML page. ``families``: dicts with family, source, feature_space, fidelity (metrics),
    utility (summary DataFrame), memorisation (metrics), figures [(caption, png bytes)].
    ``checkpoints``: the fraction flagged by the gate per family and sampled checkpoint."""
    rendered = []
    for f in families:
        utility: pd.DataFrame = f["utility"]
        rendered.append({
            "family": f["family"], "source": f["source"], "feature_space": f["feature_space"],
            "n_synthetic": number(f["fidelity"].get("n_synthetic")),
            "n_reference": number(f["fidelity"].get("n_reference")),
            "fidelity": Markup(html_table(fidelity_table(f["fidelity"]))),
            "utility": Markup(html_table(utility_table(utility))),
            "memorisation": Markup(html_table(memorisation_table(f["memorisation"]))),
            "seeds": int(utility["seeds"].max()) if len(utility) else 0,
            "minority": str(utility["minority_class"].iloc[0]) if len(utility) else "",
            "figures": [(caption, png64(png)) for caption, png in f["figures"]],
        })
    return render(
        "report.html.j2",
        title=title, comparison=Markup(html_table(comparison)), families=rendered,
        shared_figures=[(caption, png64(png)) for caption, png in shared_figures], gate=gate,
        reader_images=reader_images, level_pct=round(100 * level),
        checkpoints=Markup(html_table(checkpoints)) if checkpoints is not None and len(checkpoints) else None)
