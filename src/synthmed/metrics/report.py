"""The evaluation report: one self-contained HTML page per run (figures embedded as PNG).

The page opens with real and synthetic images side by side, then the headline table (the
numbers of ``data/08_reporting/headline.json``), then the details. Every number is shown with
its N and, for FID/KID/PRDC/diversity, beside its real-vs-real floor; the same numbers are in
``data/08_reporting/metrics.json`` (DVC) and MLflow.

Rounding: a value with an interval ``[low, high]`` is printed to the decimals its interval
supports, two significant digits of the interval's width (``interval_decimals``): FID 15.525
[4.027, 42.94] is printed ``16 [4, 43]``. A value whose interval has no width, whose standard
deviation is about 0, that lies outside its own interval, or that rests on fewer than
``SMALL_N`` images, is flagged in words next to it (``estimate_flags``).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from synthmed.core.lazy import lazy_import
from synthmed.core.templates import render

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")

# Below this N, an estimate (and its bootstrap interval) rests on too few images to be stable.
SMALL_N = 20
# A standard deviation below this fraction of the value's magnitude is taken as zero: the
# estimate did not vary (KID's subsets were all the same images, say) and says nothing about spread.
DEGENERATE_RELATIVE_STD = 1e-9

FLAG_OUTSIDE = "point outside its interval"
FLAG_DEGENERATE = "degenerate: spread ≈ 0"
FLAG_SMALL_N = "too few images"
# What each flag means, for the legend under the tables that use them.
FLAG_LEGEND = {
    FLAG_OUTSIDE: "the full-set estimate lies outside its own bootstrap interval. Bootstrap resamples repeat "
                  "images, which biases statistics such as FID; read the interval, not the point.",
    FLAG_DEGENERATE: "the interval has no width or the standard deviation is about 0: the estimate did not vary "
                     "between resamples or subsets (for KID: every subset held the same images), so no spread "
                     "was measured.",
    FLAG_SMALL_N: f"N below {SMALL_N} images: the estimate and its interval are not stable.",
}


def flags_used(text: str) -> list[tuple[str, str]]:
    """``(flag, meaning)`` for each flag that occurs in ``text`` (the legend under a table)."""
    return [(flag, meaning) for flag, meaning in FLAG_LEGEND.items() if f"⚠ {flag}" in text]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any, digits: int = 4) -> str:
    """A table cell: significant digits, ``n/a`` for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        if float(value).is_integer() and abs(value) >= 1:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def interval_decimals(low: float, high: float) -> int | None:
    """The decimal places an interval supports: two significant digits of its width.

    Negative for wide intervals (-1: round to tens); ``None`` when the width is not a positive
    finite number (a degenerate interval supports no rounding rule).
    """
    width = high - low
    if not (math.isfinite(width) and width > 0):
        return None
    return 1 - math.floor(math.log10(width))


def fixed(value: float, decimals: int) -> str:
    """``value`` rounded to ``decimals`` places (negative: to tens, hundreds...), without a "-0"."""
    if decimals >= 0:
        text = f"{value:.{decimals}f}"
    else:
        step = 10 ** -decimals
        text = f"{round(value / step) * step:.0f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def estimate_flags(value: float, *, low: float | None = None, high: float | None = None, std: float | None = None,
                   n: float | None = None) -> list[str]:
    """The words that qualify an estimate: outside its interval, degenerate, N too small."""
    flags = []
    if _finite(low) and _finite(high) and _finite(value):
        if not low <= value <= high:
            flags.append(FLAG_OUTSIDE)
        if high - low <= DEGENERATE_RELATIVE_STD * max(abs(value), 1.0):
            flags.append(FLAG_DEGENERATE)
    if _finite(std) and _finite(value) and abs(std) <= DEGENERATE_RELATIVE_STD * max(abs(value), 1.0):
        flags.append(FLAG_DEGENERATE)
    if _finite(n) and n < SMALL_N:
        flags.append(FLAG_SMALL_N)
    return flags


def estimate(value: Any, *, low: Any = None, high: Any = None, std: Any = None, n: Any = None,
             digits: int = 3, show_n: bool = False) -> str:
    """``value [low, high]`` or ``value ± std`` rounded to what the spread supports, then any flags.

    Without an interval or a standard deviation, ``digits`` significant digits. ``show_n``:
    ``(N = n)`` after the value.
    """
    if not _finite(value):
        return "n/a"
    flags = list(dict.fromkeys(estimate_flags(value, low=low if _finite(high) else None,
                                              high=high if _finite(low) else None, std=std, n=n)))
    decimals = None
    if FLAG_DEGENERATE in flags:
        pass  # a spread of about 0 supports no rounding rule: significant digits
    elif _finite(low) and _finite(high):
        decimals = interval_decimals(low, high)
    elif _finite(std):
        decimals = interval_decimals(value - std, value + std)
    if decimals is None:
        text = number(value, digits)
        if _finite(low) and _finite(high):
            text += f" [{number(low, digits)}, {number(high, digits)}]"
        elif _finite(std):
            text += f" ± {number(std, 2)}"
    elif _finite(low) and _finite(high):
        text = f"{fixed(value, decimals)} [{fixed(low, decimals)}, {fixed(high, decimals)}]"
    else:
        text = f"{fixed(value, decimals)} ± {fixed(std, decimals)}"
    if show_n and _finite(n):
        text += f" (N = {int(n)})"
    return text + "".join(f" ⚠ {flag}" for flag in flags)


# ------------------------------------------------------------------ the headline

# Companion suffixes: ``x_low``/``x_high`` (interval), ``x_std``, ``x_n`` qualify ``x``.
_COMPANIONS = ("_low", "_high", "_std", "_n")


def headline_lines(headline: Mapping[str, float]) -> list[tuple[str, str]]:
    """``(name, text)`` per headline number, companions folded into their value's text.

    ``fid 16 [4, 43]`` instead of three lines for ``fid``, ``fid_low`` and ``fid_high``.
    """
    lines = []
    for name, value in headline.items():
        if any(name.endswith(s) and name[: -len(s)] in headline for s in _COMPANIONS):
            continue
        text = estimate(value, low=headline.get(f"{name}_low"), high=headline.get(f"{name}_high"),
                        std=headline.get(f"{name}_std"), n=headline.get(f"{name}_n"), show_n=True)
        lines.append((name, text))
    # The file's keys are sorted (MetricsDataset): put the family shown in full (the published
    # generator) first, then the other families, then the gate and the published dataset.
    full = {k.split(".")[0] for k in headline if k.endswith(".utility_delta")}

    def rank(line: tuple[str, str]) -> int:
        group = line[0].split(".")[0]
        return 2 if group in ("gate", "published") else 0 if group in full else 1
    return sorted(lines, key=rank)


def headline_text(headline: Mapping[str, float]) -> str:
    """The headline as aligned lines (``synthmed headline``, ``make demo``), flags explained below."""
    lines = headline_lines(headline)
    width = max((len(name) for name, _ in lines), default=0)
    out = [f"  {name.ljust(width)}  {text}" for name, text in lines]
    out += [f"  ⚠ {flag}: {meaning}" for flag, meaning in flags_used("\n".join(out))]
    return "\n".join(out)


def load_headline(path: str) -> dict[str, float]:
    """``headline.json`` as written by the evaluation stage (a flat name -> number mapping)."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of metric names to numbers, found {type(data).__name__}; "
                         "rerun the evaluation stage (dvc repro evaluation).")
    return data


def headline_family_table(headline: Mapping[str, float]) -> pd.DataFrame:
    """One row per family of the headline: fidelity with floor, PRDC, utility difference, fraction flagged.

    Families are the prefixes of ``<family>.fid`` keys, in the headline's order.
    """
    families = [k[: -len(".fid")] for k in headline if k.endswith(".fid")]
    rows = []

    def cell(f: str, name: str, *, n: bool = False) -> str:
        key = f"{f}.{name}"
        return estimate(headline.get(key), low=headline.get(f"{key}_low"), high=headline.get(f"{key}_high"),
                        std=headline.get(f"{key}_std"), n=headline.get(f"{f}.fid_n") if n else None)
    for f in families:
        rows.append({
            "family": f, "N": number(headline.get(f"{f}.fid_n")),
            "FID [interval]": cell(f, "fid", n=True), "FID floor (real vs real)": cell(f, "fid_floor"),
            "KID": cell(f, "kid"), "precision": cell(f, "precision"), "recall": cell(f, "recall"),
            "utility: balanced accuracy of real+synthetic − real": cell(f, "utility_delta"),
            "fraction flagged by the gate": cell(f, "flagged_fraction"),
        })
    return pd.DataFrame(rows)


def headline_gate_table(headline: Mapping[str, float]) -> pd.DataFrame:
    """The published dataset's gate numbers and per class shortfall, one row each."""
    rows = [{"measure": name, "value": text} for name, text in headline_lines(headline)
            if name.startswith(("gate.", "published."))]
    return pd.DataFrame(rows, columns=["measure", "value"])


def html_table(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table (escaped; numbers formatted by ``number``)."""
    return frame.to_html(index=False, escape=True, na_rep="n/a", formatters={c: number for c in frame.columns},
                         border=0)


def with_interval(metrics: Mapping[str, float], name: str) -> str:
    """``value [low, high]`` for a metric with ``_low``/``_high`` (and ``_n``) companions, rounded and flagged."""
    if name not in metrics:
        return "n/a"
    return estimate(metrics[name], low=metrics.get(f"{name}_low"), high=metrics.get(f"{name}_high"),
                    n=metrics.get(f"{name}_n"))


def _patients(count: Any) -> str:
    return f"{int(count)} patient{'' if int(count) == 1 else 's'}"


def _count(n: Any, patients: Any, real: bool, synthetic: Any = None) -> str:
    """``64``, or ``64 (real: 9 patients)`` where the interval drew patients (``real``: say they
    are real); ``synthetic``: the patients whose label maps the samples were drawn from, which
    the interval drew likewise ("64 (real: 9 patients; samples: the maps of 5 patients)")."""
    if not _finite(patients):
        return f"{int(n):,}"
    maps = f"; samples: the maps of {_patients(synthetic)}" if _finite(synthetic) and synthetic > 0 else ""
    return f"{int(n):,} ({'real: ' if real else ''}{_patients(patients)}{maps})"


def sample_size(metrics: Mapping[str, float], name: str, *others: tuple[str, str]) -> Any:
    """A table's N cell: ``<name>_n``, and the real patients its interval resampled where it drew
    patients (``<name>_patients``): "64 (real: 9 patients)". ``others`` are ``(label, metric)`` of
    the row's other columns (a floor, the real images' score): each that drew patients, or other
    than N images, adds "; <label>: 64 (21 patients)", so every interval in the row says what it drew.
    Averaged over several random splits into halves (``<name>_splits`` > 1), it says so, and the
    patients are the fewest of any split."""
    n, patients = metrics.get(f"{name}_n"), metrics.get(f"{name}_patients")
    shown = [(label, metrics.get(f"{other}_n"), metrics.get(f"{other}_patients")) for label, other in others]
    shown = [(label, m, p) for label, m, p in shown if _finite(m) and (_finite(p) or m != n)]
    averaged = _averaged(metrics, name, patients=_finite(patients))
    if not _finite(n) or (not _finite(patients) and not shown and not averaged):
        return n
    return "; ".join([_count(n, patients, True, metrics.get(f"{name}_synthetic_patients"))] + averaged
                     + [f"{label}: {_count(m, p, False)}" for label, m, p in shown])


def _averaged(metrics: Mapping[str, float], name: str, *, patients: bool = False) -> list[str]:
    """["mean of 5 random splits into halves"] where ``<name>_splits`` > 1, else []."""
    splits = metrics.get(f"{name}_splits")
    if not _finite(splits) or splits <= 1:
        return []
    return [f"mean of {int(splits)} random splits into halves" + (", patients the fewest of any split" if patients
                                                                   else "")]


def _averaged_n(metrics: Mapping[str, float]) -> Any:
    """The N cell of the rows computed on the FID's halves (KID, PRDC): ``fid_n``, and the splits averaged."""
    n, averaged = metrics.get("fid_n"), _averaged(metrics, "fid")
    return "; ".join([f"{int(n):,}", *averaged]) if _finite(n) and averaged else n


def fidelity_table(metrics: Mapping[str, float]) -> pd.DataFrame:
    """Each fidelity metric beside its real-vs-real floor, with N (and the real patients drawn)."""
    rows = [
        ("FID", with_interval(metrics, "fid"), with_interval(metrics, "fid_floor_halves"),
         with_interval(metrics, "fid_floor_neighbour_slices"),
         sample_size(metrics, "fid", ("halves", "fid_floor_halves"),
                     ("neighbouring slices", "fid_floor_neighbour_slices"))),
        ("KID", estimate(metrics.get("kid"), std=metrics.get("kid_std")),
         estimate(metrics.get("kid_floor_halves"), std=metrics.get("kid_floor_halves_std")), "",
         _averaged_n(metrics)),
    ]
    rows += [(name, number(metrics.get(name)), number(metrics.get(f"{name}_floor_halves")), "", _averaged_n(metrics))
             for name in ("precision", "recall", "density", "coverage")]
    rows.append(("diversity (mean pairwise MS-SSIM, lower = more diverse)", number(metrics.get("diversity_ms_ssim")),
                 number(metrics.get("diversity_ms_ssim_real")), "", metrics.get("n_synthetic")))
    if "detectability_auc" in metrics:
        rows.append(("detectability AUC (a classifier telling synthetic from real; 0.5 = it cannot)",
                     with_interval(metrics, "detectability_auc"), with_interval(metrics, "detectability_auc_floor"),
                     "", sample_size(metrics, "detectability_auc", ("floor", "detectability_auc_floor"))))
    if "lesion_signal_auc" in metrics:
        real = ("the real slices of the same label maps" if metrics.get("lesion_signal_real_paired") else
                "the real images it learnt from, what a faithful copy reaches")
        rows.append((f"lesion signal AUC (bright-spot score, lesion-class vs normal images; second column: {real}; "
                     "0.5 = no sign of the lesions)",
                     with_interval(metrics, "lesion_signal_auc"), with_interval(metrics, "lesion_signal_auc_real"),
                     "", sample_size(metrics, "lesion_signal_auc", ("real images", "lesion_signal_auc_real"))))
    if "lesion_contrast" in metrics:
        rows.append(("lesion contrast inside the lesion mask ((lesion - grey and white matter around it) / that "
                     "tissue's std; second column: the real image of the same label map; 0 = no lesion drawn)",
                     with_interval(metrics, "lesion_contrast"), with_interval(metrics, "lesion_contrast_real"),
                     "", sample_size(metrics, "lesion_contrast", ("real images", "lesion_contrast_real"))))
    for name in ("mse", "ssim", "psnr"):
        if f"paired_{name}" in metrics:
            rows.append((f"paired {name.upper()} vs the real image of the same mask",
                         with_interval(metrics, f"paired_{name}"),
                         "", "", sample_size(metrics, f"paired_{name}")))
    return pd.DataFrame(rows, columns=["metric", "synthetic vs real", "floor: real vs real (halves)",
                                       "floor: neighbouring slices", "N"])


def utility_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Seed means with intervals (over test patients and seeds); difference to real-only for the
    bootstrapped scores; the spread between the seeds' classifiers; the test images and patients."""
    rows = []
    for row in summary.itertuples():
        if not (row.score in ("balanced_accuracy", "auroc") or row.score.startswith("f1.")):
            continue
        value = estimate(row.mean, std=row.std) if math.isnan(row.low) \
            else estimate(row.mean, low=row.low, high=row.high)
        delta = "" if math.isnan(row.delta_low) or row.mode == "real" \
            else estimate(row.delta_vs_real, low=row.delta_low, high=row.delta_high)
        groups = getattr(row, "n_test_groups", row.n_test)
        tested = f"{row.n_test} images of {groups} patients" if groups == groups and groups < row.n_test \
            else f"{row.n_test} images"
        rows.append({"mode": row.mode, "score": row.score, "value": value, "difference to real only": delta,
                     "seeds (std)": f"{row.seeds} ({row.std:.2f})", "n test": tested})
    return pd.DataFrame(rows)


MEMORISATION_MEASURES = {
    "calibrated": "1 when the gate could be calibrated on held-out patients, 0 when it could not run",
    "candidate_count": "samples scored",
    "flagged_count": "samples flagged as copies of a training image",
    "flagged_fraction": "flagged / scored",
    "pixel_threshold": "pixel similarity above which a sample is a copy (percentile of the calibration images')",
    "feature_threshold": "the same in the encoder's feature space",
    "max_pixel_similarity": "the sample closest to a training image",
    "median_pixel_similarity": "the median sample's similarity to its nearest training image",
    "held_out_max_pixel_similarity": "the held-out image closest to a training image, counting those left out of "
                                     "the calibration (copies across splits, blank or low-tissue images)",
    "calibration_max_pixel_similarity": "the closest of the held-out images that set the threshold: how near an "
                                        "unseen patient's image came",
    "held_out_count": "held-out images (patients not in training) that set the threshold",
    "self_test_recall": "planted disguised copies of training images the gate flagged",
    "planted_count": "copies planted for the self-test",
    "planted_missed": "planted copies not flagged",
}


def memorisation_table(metrics: Mapping[str, float]) -> pd.DataFrame:
    """The gate's numbers of one family, each with what it measures."""
    return pd.DataFrame([{"measure": n, "value": number(metrics.get(n)), "meaning": meaning}
                         for n, meaning in MEMORISATION_MEASURES.items()])


def transposed(table: pd.DataFrame, key: str = "family") -> pd.DataFrame:
    """One column per ``key`` value and one row per measure: a table of many measures that fits the page."""
    if key not in table or not len(table):
        return table
    out = table.set_index(key).T
    out.columns = [str(c) for c in out.columns]
    return out.rename_axis("measure").reset_index()


def steps_sweep_table(table: pd.DataFrame) -> pd.DataFrame:
    """The FID-versus-steps table for reading: FID with its interval, the floor, time per image, the choice."""
    rows = []
    for row in table.itertuples():
        rows.append({"sampler": row.sampler, "steps": int(row.steps), "guidance": row.guidance,
                     "FID": estimate(row.fid, low=row.fid_low, high=row.fid_high, n=row.fid_n),
                     "real-vs-real floor": estimate(row.floor, low=row.floor_low, high=row.floor_high),
                     "s per image": f"{row.seconds_per_image:.3g}",
                     "within tolerance": "yes" if bool(row.within_tolerance) else "no",
                     "choice": ("recommended" if bool(row.recommended) else "") + (" (best FID)" if bool(row.best)
                                                                                    else "")})
    return pd.DataFrame(rows)


def png64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _steps_sweep(sweep: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The report's view of a family's steps sweep (``table``, ``figure`` PNG bytes, ``device``), or None."""
    if not sweep or sweep.get("table") is None or not len(sweep["table"]):
        return None
    table: pd.DataFrame = sweep["table"]
    chosen = table[table["recommended"].astype(bool)].iloc[0]
    return {"table": Markup(html_table(steps_sweep_table(table))), "figure": png64(sweep["figure"]),
            "recommended": f"{chosen['sampler']}, {int(chosen['steps'])} steps",
            "threshold": number(chosen["threshold"]),
            "images": int(chosen["images"]), "device": f"{chosen['device']} ({chosen['precision']})"}


def render_report(*, title: str, comparison: pd.DataFrame, families: Sequence[Mapping[str, Any]],
                  shared_figures: Sequence[tuple[str, bytes]], gate: Mapping[str, Any] | None, reader_images: int,
                  level: float, checkpoints: pd.DataFrame | None = None,
                  grids: Sequence[tuple[str, bytes]] = (), headline: Mapping[str, float] | None = None) -> str:
    """The HTML page: image grids, then the headline, then the details.

    ``grids``: (caption, PNG) of real vs synthetic images per class, one per family (study),
    shown first. ``headline``: the flat headline numbers (``headline.json``; every family in
    full), shown as one row per family and the gate's numbers. ``families``: dicts with family,
    source, feature_space, fidelity (metrics), utility (summary DataFrame), memorisation
    (metrics), figures [(caption, png bytes)] for the details, and optionally steps_sweep
    ({table: the ``synthmed.metrics.steps_sweep`` table, figure: PNG bytes}). ``checkpoints``: the fraction
    flagged by the gate per family and sampled checkpoint.
    """
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
            "steps_sweep": _steps_sweep(f.get("steps_sweep")),
        })
    headline = dict(headline or {})
    tables = [html_table(t) for t in (headline_family_table(headline), headline_gate_table(headline)) if len(t)]
    return render(
        "report.html.j2",
        title=title, comparison=Markup(html_table(transposed(comparison))), families=rendered,
        shared_figures=[(caption, png64(png)) for caption, png in shared_figures], gate=gate,
        reader_images=reader_images, level_pct=round(100 * level),
        checkpoints=Markup(html_table(checkpoints)) if checkpoints is not None and len(checkpoints) else None,
        grids=[(caption, png64(png)) for caption, png in grids],
        headline_tables=[Markup(t) for t in tables],
        flag_legend=flags_used("\n".join(tables)))
