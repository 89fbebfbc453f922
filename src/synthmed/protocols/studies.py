"""Study tables: our rows beside a published figure, as a CSV and an HTML section.

A study (``study_<name>`` pipelines) reproduces a published table. Its result is one table
with the published table's columns (the metrics, in its order) and these rows:

- ``ours``: what synthmed measured, each metric a mean with a bootstrap interval and N;
- ``floor`` / ``reference``: baselines that say what a number is worth (for example the
  mean image, or the real image blurred), measured on the same images;
- ``published``: the cited figure, a constant labelled with its citation, without
  interval or N (papers rarely give them).

``study_table`` builds the table (columns ``STUDY_COLUMNS`` + per metric ``<m>``,
``<m>_low``, ``<m>_high``), ``render_study_section`` an HTML fragment with the table and the
study's figures (``templates/study_section.html.j2``), ``render_study_page`` a standalone
page around it. Nothing here knows a particular study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthmed.core.atomic import atomic_write_bytes
from synthmed.core.lazy import lazy_import
from synthmed.core.templates import render
from synthmed.core.validation import is_number

pd = lazy_import("pandas")  # on first use: the parameter check imports this module

ROW_KINDS = ("ours", "floor", "reference", "published")
STUDY_COLUMNS = ["row", "kind", "n", "level", "source"]
HELD_OUT_SPLITS = ("validation", "test")


def check_held_out_splits(key: str, splits: Sequence[str]) -> None:
    """Refuse an empty list of held-out splits, or one naming a split other than validation / test.

    ``key`` is the parameter's full name (e.g. ``study_inpainting.held_out_splits``), for the message.
    """
    if not splits or not set(splits) <= set(HELD_OUT_SPLITS):
        raise ValueError(f"{key} must be a non-empty list of {', '.join(HELD_OUT_SPLITS)}; got {list(splits)!r}.")


def check_level(key: str, level: Any) -> None:
    """Refuse a confidence level outside (0.5, 1); ``key`` is the parameter's full name."""
    if not is_number(level) or not 0.5 < level < 1.0:
        raise ValueError(f"{key} must be in (0.5, 1), got {level!r}.")


@dataclass(frozen=True)
class StudyRow:
    """One measured row.

    Args:
        label: what the row is (e.g. "pix2pix (ours)").
        kind: ``ours``, ``floor`` or ``reference``.
        summaries: per metric ``{"mean", "low", "high", "n"}`` (``synthmed.metrics.fidelity.summarise``).
        source: how the row was made, one line.
    """

    label: str
    kind: str
    summaries: Mapping[str, Mapping[str, float]]
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ROW_KINDS[:-1]:
            raise ValueError(f"StudyRow {self.label!r}: kind must be one of {list(ROW_KINDS[:-1])}, got {self.kind!r}.")


@dataclass(frozen=True)
class PublishedRow:
    """A published figure: constants, with the citation they come from (table/figure)."""

    label: str
    values: Mapping[str, float]
    citation: str
    notes: str = field(default="")

    def __post_init__(self) -> None:
        if not self.citation.strip():
            raise ValueError(f"PublishedRow {self.label!r} needs a citation: a published figure is a cited constant.")


def clopper_pearson(k: int, n: int, level: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval at ``level`` of a proportion ``k / n``, ``n >= 1``."""
    from scipy.stats import binomtest

    interval = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(interval.low), float(interval.high)


def study_table(rows: Sequence[StudyRow], published: Sequence[PublishedRow], metrics: Sequence[str],
                *, level: float) -> pd.DataFrame:
    """Our rows, then the published ones, with the columns ``STUDY_COLUMNS`` and per metric ``m, m_low, m_high``.

    Raises:
        ValueError: a measured row lacks a metric, or rows of one table disagree on N for a
            metric (a floor must be measured on the same images as ours).
    """
    if not metrics:
        raise ValueError("study_table needs at least one metric column.")
    records = []
    for row in rows:
        missing = [m for m in metrics if m not in row.summaries]
        if missing:
            raise ValueError(f"Study row {row.label!r} lacks metric(s) {missing}; it has {sorted(row.summaries)}.")
        counts = {int(row.summaries[m]["n"]) for m in metrics}
        if len(counts) != 1:
            raise ValueError(f"Study row {row.label!r} has different N per metric: {sorted(counts)}.")
        record: dict[str, Any] = {"row": row.label, "kind": row.kind, "n": counts.pop(), "level": level,
                                  "source": row.source}
        for m in metrics:
            record.update({m: row.summaries[m]["mean"], f"{m}_low": row.summaries[m]["low"],
                           f"{m}_high": row.summaries[m]["high"]})
        records.append(record)
    measured_n = {r["n"] for r in records}
    if len(measured_n) > 1:
        raise ValueError(f"The measured rows of a study table must share N; got {sorted(measured_n)}.")
    for pub in published:
        record = {"row": pub.label, "kind": "published", "n": None, "level": None, "source": pub.citation}
        for m in metrics:
            record.update({m: pub.values.get(m), f"{m}_low": None, f"{m}_high": None})
        records.append(record)
    columns = STUDY_COLUMNS + [c for m in metrics for c in (m, f"{m}_low", f"{m}_high")]
    return pd.DataFrame(records, columns=columns)


def _cell(value: Any, low: Any, high: Any, digits: int) -> str:
    def finite(v: Any) -> bool:
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    if not finite(value):
        return "-"
    text = f"{float(value):.{digits}f}"
    if finite(low) and finite(high):
        text += f" [{float(low):.{digits}f}, {float(high):.{digits}f}]"
    return text


def render_study_section(*, title: str, anchor: str, table: pd.DataFrame, metrics: Sequence[str],
                         metric_labels: Mapping[str, str], digits: Mapping[str, int],
                         figures: Sequence[tuple[str, str]], notes: Sequence[str]) -> str:
    """An HTML ``<section>`` with the table (mean [interval], N per row) and figures.

    Args:
        figures: ``(caption, base64 PNG)`` pairs.
        notes: paragraphs under the table (what the floors are, limitations).
    """
    header = ["row", "kind", "N"] + [metric_labels.get(m, m) for m in metrics] + ["source"]
    body = []
    for record in table.to_dict("records"):
        n = record["n"]
        body.append([record["row"], record["kind"], "-" if n is None or n != n else str(int(n))]
                    + [_cell(record[m], record[f"{m}_low"], record[f"{m}_high"], digits.get(m, 3)) for m in metrics]
                    + [record["source"] or ""])
    levels = {float(v) for v in table["level"].dropna()}
    return render("study_section.html.j2", title=title, anchor=anchor, header=header, body=body,
                  level=levels.pop() if len(levels) == 1 else None, figures=list(figures), notes=list(notes))


def render_study_page(*, title: str, sections: Sequence[str]) -> str:
    """A standalone HTML page around already rendered study sections."""
    return render("study_page.html.j2", title=title, sections=list(sections))


def figure_png64(figure: Any, *, dpi: int = 90) -> str:
    """A matplotlib figure as a base64 PNG for a study's HTML page (``synthmed.metrics.report.png64``)."""
    import io

    from synthmed.metrics.report import png64

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return png64(buffer.getvalue())


# The 2D studies' folders under data/08_reporting/studies (each ``study_<name>`` pipeline writes
# ``table.csv`` and ``report.html`` there), in the order of the index page.
STUDIES = {
    "class_multiplication": "Class multiplication: a class-conditional DDPM multiplies the lesion class",
    "lesion_patches": "Lesion patches: DCGAN on lesion and normal patches, the classifier in four modes",
    "inpainting": "Inpainting: diffusion vs Pix2Pix vs the neighbouring slice, per structure",
    "mask_to_image": "Mask to image: Pix2Pix from the vessel mask to the whole fundus image",
}


def table_metrics(table: pd.DataFrame) -> list[str]:
    """The metric columns of a ``study_table`` (every column but ``STUDY_COLUMNS`` and the interval bounds)."""
    names = [c for c in table.columns if c not in STUDY_COLUMNS]
    return [c for c in names if not c.endswith(("_low", "_high")) or c.rsplit("_", 1)[0] not in names]


def _digits(values: pd.Series) -> int:
    """Decimals that show the smallest non-zero magnitude of a metric with about three significant digits."""
    finite = pd.to_numeric(values, errors="coerce").abs()
    finite = finite[(finite > 0) & finite.map(math.isfinite)]
    if finite.empty:
        return 3
    return min(6, max(2, 2 - math.floor(math.log10(float(finite.min())))))


def render_studies_index(root: Any) -> tuple[str, dict[str, bool]]:
    """One page with the table of every study in ``STUDIES`` that has run (``root/<name>/table.csv``),
    each beside its published figure, and the command for each that has not.

    Returns:
        The page, and per study whether its table was found.
    """
    root = Path(root)
    sections, found = [], {}
    for name, title in STUDIES.items():
        table_file = root / name / "table.csv"
        found[name] = table_file.is_file()
        if not found[name]:
            sections.append(f'<section class="study" id="{name}"><h2>{title}</h2><p class="note">Not run yet: '
                            f"<code>kedro run --pipelines study_{name}</code> (or <code>make studies</code>).</p>"
                            "</section>")
            continue
        try:
            table = pd.read_csv(table_file, keep_default_na=True)
            metrics = table_metrics(table)
            missing = [c for c in STUDY_COLUMNS if c not in table.columns]
            if missing or not metrics:
                raise ValueError(f"columns {missing} missing" if missing else "no metric column")
        except (ValueError, pd.errors.ParserError) as exc:
            raise ValueError(f"{table_file}: not a study table ({exc}); expected the columns {STUDY_COLUMNS} and "
                             "a metric with _low / _high. Re-run its study pipeline.") from exc
        table = table.astype(object).where(table.notna(), None)
        sections.append(render_study_section(
            title=title, anchor=name, table=table, metrics=metrics, metric_labels={},
            digits={m: _digits(table[m]) for m in metrics}, figures=[],
            notes=[f"Figures, N per row and the study's notes: {name}/report.html; the table: {name}/table.csv."]))
    return render_study_page(title="synthmed studies: our tables beside the published figures",
                             sections=sections), found


def write_studies_index(root: Any) -> tuple[Path, dict[str, bool]]:
    """`render_studies_index` written to ``root/index.html`` (atomically; ``root`` is created).

    Returns:
        The page's path, and per study whether its table was found.

    Raises:
        ValueError: a ``table.csv`` under ``root`` is not a study table; nothing is written.
    """
    root = Path(root)
    page, found = render_studies_index(root)
    root.mkdir(parents=True, exist_ok=True)
    index = root / "index.html"
    atomic_write_bytes(index, page.encode("utf-8"))
    return index, found
