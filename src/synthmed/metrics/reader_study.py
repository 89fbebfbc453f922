"""A blinded reader study: clinicians judge a shuffled mix of real and synthetic images.

``build_reader_kit`` draws the same number of images from each source, shuffles them
together and gives them neutral ids (``img-001`` ...). It returns the files handed to the
readers (PNG images, a printable sheet, a CSV template, instructions) and, separately, the
answer key, which the caller stores outside the kit folder. ``score_answers`` (and the
``score`` command of this module) checks the returned CSV sheets against the key.

Blinding rests on three things: the ids follow the shuffled order and say nothing about
the source; both sources are written the same way (8-bit PNG, same mode, same size,
nearest-neighbour upscaling, no metadata); no kit file carries the truth.

The volume kit (``synthmed.metrics.volume_reader``: orthogonal-view sheets of volumes through the
lesion, with its own ``Wording``) is built by the same function and scored by the same command.

Command line::

    python -m synthmed.metrics.reader_study score --key key.csv answers_ab.csv answers_cd.csv \
        --json scores.json
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from synthmed.core.lazy import lazy_import
from synthmed.core.templates import render

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")

logger = logging.getLogger(__name__)

REAL = "real"
SYNTHETIC = "synthetic"
TRUTHS = (REAL, SYNTHETIC)
ANATOMY_ANSWERS = ("yes", "no")
ANSWER_COLUMNS = ("reader", "image_id", "judged", "anatomically_correct", "comment")
REQUIRED_ANSWER_COLUMNS = ("reader", "image_id", "judged", "anatomically_correct")
KEY_COLUMNS = ("image_id", "truth", "label", "source_index")
MEASURES = (
    "accuracy",
    "synthetic_detection_recall",
    "real_specificity",
    "synthetic_judged_anatomically_correct",
    "real_judged_anatomically_correct",
)
# Float rounding in normalisation and sampling can overshoot [-1, 1] by a few ulps; anything
# beyond this is a different scale (e.g. [0, 255] or HU) and is rejected, not clipped away.
_RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Wording:
    """What the sheet and the instructions tell readers each image shows and what to judge beside the source.

    The answer column stays ``anatomically_correct`` (one scoring for every kit); only its question changes.

    Args:
        what: a paragraph on what each image shows ("" for the 2D kit: one image, its class under it).
        plausible_question: the sheet's yes / no question.
        plausible_answer: the instructions' entry for the ``anatomically_correct`` column.
    """

    what: str = ""
    plausible_question: str = "Anatomically plausible"
    plausible_answer: str = "`yes` if the anatomy is plausible, otherwise `no`"


# --------------------------------------------------------------------------------------------
# Building the kit
# --------------------------------------------------------------------------------------------


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    """Validate ``(N, C, H, W)`` float in [-1, 1], C in (1, 3), all finite; return as array."""
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"Expected {name} with shape (N, C, H, W), C in (1, 3), got {array.shape}.")
    if array.shape[0] == 0:
        raise ValueError(f"Expected at least one image in {name}, got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"Expected {name} as floats in [-1, 1], got dtype {array.dtype}.")
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array).reshape(len(array), -1).all(axis=1))[0])
        raise ValueError(f"Expected finite values in {name}, got NaN or inf in image {bad}.")
    low, high = float(array.min()), float(array.max())
    if low < -1.0 - _RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(f"Expected {name} in [-1, 1], got values in [{low:.4g}, {high:.4g}].")
    return array


def _check_labels(labels: Sequence[str], n_images: int, name: str) -> list[str]:
    """One class name (a string) per image."""
    values = list(labels)
    if len(values) != n_images:
        raise ValueError(f"Expected one label per image in {name}, got {len(values)} labels for {n_images} images.")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(
                f"Expected class names (strings) in {name}, got {value!r} ({type(value).__name__}) at index {index}."
            )
    return values


def _display_size(height: int, width: int, display_px: int) -> tuple[int, int]:
    """``(width, height)`` in pixels with the longer side ``display_px``, aspect ratio kept."""
    if height == width:
        return display_px, display_px
    if height > width:
        return max(1, round(display_px * width / height)), display_px
    return display_px, max(1, round(display_px * height / width))


def _png_bytes(image: np.ndarray, size: tuple[int, int]) -> bytes:
    """``(C, H, W)`` float in [-1, 1] -> 8-bit PNG (grey ``L`` or ``RGB``), nearest-neighbour.

    Both sources go through this one function with the same settings, so neither the file
    format, the bit depth nor the interpolation can tell them apart. Pillow writes no
    metadata chunks unless asked to.
    """
    unit = np.clip((np.asarray(image, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    pixels = np.rint(unit * 255).astype(np.uint8)
    picture = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(pixels, 0, -1)))
    picture = picture.resize(size, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def build_reader_kit(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    real_labels: Sequence[str],
    synthetic_labels: Sequence[str],
    per_source: int,
    display_px: int = 256,
    seed: int = 0,
    title: str,
    wording: Wording | None = None,
) -> tuple[dict[str, object], pd.DataFrame]:
    """Draw, shuffle and blind real and synthetic images for a reader study.

    Args:
        real: ``(N_real, C, H, W)`` float32 in [-1, 1], C in (1, 3).
        synthetic: ``(N_syn, C, H, W)`` float32 in [-1, 1], the same ``(C, H, W)`` as
            ``real`` (a different size or channel count would give the source away).
        real_labels: ``N_real`` class names, one per real image.
        synthetic_labels: ``N_syn`` class names, one per synthetic image.
        per_source: images drawn without replacement from each source (all of a source
            that has fewer), >= 1.
        display_px: the longer side of each PNG in pixels, >= ``max(H, W)``; images are
            upscaled with nearest neighbour so that no source is smoothed differently.
        seed: seeds ``np.random.default_rng`` for drawing and shuffling: the same seed gives
            the same kit and key.
        title: the study title shown on the sheet and in the instructions.
        wording: what the images show and the plausibility question (`Wording`; default: the
            2D kit's, anatomy). A label of ``""`` prints no class under the image.

    Returns:
        ``(files, answer_key)``. ``files`` maps a path relative to the kit folder to its
        content: ``images/img-001.png`` ... (PNG ``bytes``), ``sheet.html`` (``str``, a
        self-contained printable page with the images embedded), ``answers_template.csv``
        (a ``DataFrame`` with columns ``reader, image_id, judged, anatomically_correct,
        comment``, one empty row per image) and ``INSTRUCTIONS.md`` (``str``).
        ``answer_key`` has columns ``image_id, truth, label, source_index``: ``truth`` is
        ``"real"`` or ``"synthetic"`` and ``source_index`` indexes ``real`` or ``synthetic``.
        Store the key outside the kit folder; it is the only place the truth is written.

    Raises:
        ValueError: for a wrong shape, non-finite or out-of-range values, a label count
            that differs from the image count, ``per_source < 1`` or ``display_px`` smaller
            than the images.
    """
    real_images = _check_images(real, "real")
    synthetic_images = _check_images(synthetic, "synthetic")
    if real_images.shape[1:] != synthetic_images.shape[1:]:
        raise ValueError(
            f"Expected synthetic images with the same (C, H, W) as the real ones, {real_images.shape[1:]}, "
            f"got {synthetic_images.shape[1:]}; a different size or channel count would unblind the readers."
        )
    labels = {
        REAL: _check_labels(real_labels, len(real_images), "real_labels"),
        SYNTHETIC: _check_labels(synthetic_labels, len(synthetic_images), "synthetic_labels"),
    }
    if isinstance(per_source, bool) or not isinstance(per_source, (int, np.integer)) or per_source < 1:
        raise ValueError(f"Expected per_source as an integer >= 1, got {per_source!r}.")
    _, height, width = real_images.shape[1:]
    if isinstance(display_px, bool) or not isinstance(display_px, (int, np.integer)) or display_px < max(height, width):
        raise ValueError(
            f"Expected display_px as an integer >= the image size max(H, W) = {max(height, width)} "
            f"(images are only upscaled), got {display_px!r}."
        )

    wording = Wording() if wording is None else wording
    rng = np.random.default_rng(seed)
    sources = {REAL: real_images, SYNTHETIC: synthetic_images}
    drawn: list[tuple[str, int]] = []
    for truth in TRUTHS:
        count = min(int(per_source), len(sources[truth]))
        chosen = np.sort(rng.choice(len(sources[truth]), size=count, replace=False))
        drawn.extend((truth, int(index)) for index in chosen)
    order = rng.permutation(len(drawn))
    digits = max(3, len(str(len(drawn))))

    size = _display_size(height, width, int(display_px))
    files: dict[str, object] = {}
    key_rows: list[dict[str, object]] = []
    sheet_items: list[dict[str, str]] = []
    for position, drawn_index in enumerate(order, start=1):
        truth, source_index = drawn[int(drawn_index)]
        image_id = f"img-{position:0{digits}d}"
        png = _png_bytes(sources[truth][source_index], size)
        files[f"images/{image_id}.png"] = png
        label = labels[truth][source_index]
        key_rows.append({"image_id": image_id, "truth": truth, "label": label, "source_index": source_index})
        sheet_items.append(
            {"image_id": image_id, "label": label, "png_base64": base64.b64encode(png).decode("ascii")}
        )

    files["sheet.html"] = render(
        "reader_sheet.html.j2",
        title=title, items=sheet_items, width_px=size[0], height_px=size[1], wording=wording
    )
    files["answers_template.csv"] = pd.DataFrame(
        {
            "reader": [""] * len(key_rows),
            "image_id": [row["image_id"] for row in key_rows],
            "judged": [""] * len(key_rows),
            "anatomically_correct": [""] * len(key_rows),
            "comment": [""] * len(key_rows),
        },
        columns=list(ANSWER_COLUMNS),
    )
    files["INSTRUCTIONS.md"] = render(
        "reader_instructions.md.j2",
        title=title, n_images=len(key_rows), wording=wording
    )
    answer_key = pd.DataFrame(key_rows, columns=list(KEY_COLUMNS))
    logger.info(
        "Built a reader kit of %d images at %dx%d px (%d real of %d, %d synthetic of %d).",
        len(key_rows), size[0], size[1],
        sum(truth == REAL for truth, _ in drawn), len(real_images),
        sum(truth == SYNTHETIC for truth, _ in drawn), len(synthetic_images),
    )  # fmt: skip
    return files, answer_key


# --------------------------------------------------------------------------------------------
# Scoring the returned sheets
# --------------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """A CSV cell as stripped text; empty or missing cells (NaN, None) become ``""``."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).strip()


def _normalised_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Column names stripped and lower-cased (spreadsheets add stray spaces and capitals)."""
    return frame.rename(columns=lambda column: str(column).strip().lower())


def _check_key(answer_key: pd.DataFrame, name: str) -> dict[str, str]:
    """``image_id -> truth`` from the answer key; ``name`` is used in error messages."""
    key = _normalised_columns(answer_key)
    missing = [column for column in ("image_id", "truth") if column not in key.columns]
    if missing:
        raise ValueError(
            f"{name}: missing column(s) {missing}; expected at least image_id and truth "
            f"(the key written by build_reader_kit has {list(KEY_COLUMNS)}), got {list(answer_key.columns)}."
        )
    if len(key) == 0:
        raise ValueError(f"{name}: expected one row per image, got an empty answer key.")
    truth_by_id: dict[str, str] = {}
    for row, (raw_id, raw_truth) in enumerate(zip(key["image_id"], key["truth"], strict=True), start=1):
        image_id, truth = _cell(raw_id), _cell(raw_truth).lower()
        if not image_id:
            raise ValueError(f"{name}, data row {row}: empty image_id; expected an id such as 'img-001'.")
        if truth not in TRUTHS:
            raise ValueError(f"{name}, data row {row}: truth {_cell(raw_truth)!r}; expected one of {list(TRUTHS)}.")
        if image_id in truth_by_id:
            raise ValueError(f"{name}, data row {row}: duplicate image_id {image_id!r}; expected each id once.")
        truth_by_id[image_id] = truth
    return truth_by_id


def _share(hits: pd.Series) -> float:
    """Mean of a boolean series; NaN when it is empty (no denominator)."""
    return float(hits.mean()) if len(hits) else math.nan


def _measures(answers: pd.DataFrame, n_pairs: int) -> dict[str, float]:
    """The study measures over ``answers`` (one row per reader and image answered).

    ``n_pairs`` is readers x images: the pairs not judged count as unanswered.
    """
    judged = answers[answers["judged"] != ""]
    real = judged[judged["truth"] == REAL]
    synthetic = judged[judged["truth"] == SYNTHETIC]
    rated = answers[answers["anatomically_correct"] != ""]
    return {
        "answers": int(len(judged)),
        "unanswered": int(n_pairs - len(judged)),
        "accuracy": _share(judged["judged"] == judged["truth"]),
        "synthetic_detection_recall": _share(synthetic["judged"] == SYNTHETIC),
        "real_specificity": _share(real["judged"] == REAL),
        "synthetic_judged_anatomically_correct": _share(
            rated.loc[rated["truth"] == SYNTHETIC, "anatomically_correct"] == "yes"
        ),
        "real_judged_anatomically_correct": _share(rated.loc[rated["truth"] == REAL, "anatomically_correct"] == "yes"),
    }


def _score(
    answer_key: pd.DataFrame, answers: dict[str, pd.DataFrame], *, key_name: str
) -> tuple[dict[str, float], pd.DataFrame]:
    """``score_answers`` with the key's name (a file path in the CLI) for error messages."""
    truth_by_id = _check_key(answer_key, key_name)
    if not answers:
        raise ValueError("answers: expected at least one returned answer sheet, got none.")
    id_examples = ", ".join(sorted(truth_by_id)[:3]) + (", ..." if len(truth_by_id) > 3 else "")
    records: list[dict[str, str]] = []
    first_seen: dict[tuple[str, str], tuple[str, int]] = {}
    for name, sheet in answers.items():
        frame = _normalised_columns(sheet)
        missing = [column for column in REQUIRED_ANSWER_COLUMNS if column not in frame.columns]
        if missing:
            raise ValueError(
                f"{name}: missing column(s) {missing}; expected {list(ANSWER_COLUMNS)} "
                f"(comment optional), got {list(sheet.columns)}."
            )
        rows = zip(*(frame[column] for column in REQUIRED_ANSWER_COLUMNS), strict=True)
        for row, (raw_reader, raw_id, raw_judged, raw_anatomy) in enumerate(rows, start=1):
            where = f"{name}, data row {row}"
            reader, image_id = _cell(raw_reader), _cell(raw_id)
            judged, anatomy = _cell(raw_judged).lower(), _cell(raw_anatomy).lower()
            if not reader:
                raise ValueError(f"{where}: empty reader; expected the reader's name or initials on every row.")
            if image_id not in truth_by_id:
                raise ValueError(
                    f"{where}: unknown image_id {image_id!r}; expected an id from the answer key ({id_examples})."
                )
            if judged not in ("", *TRUTHS):
                raise ValueError(
                    f"{where}: judged {_cell(raw_judged)!r}; expected 'real', 'synthetic' or empty (not answered)."
                )
            if anatomy not in ("", *ANATOMY_ANSWERS):
                raise ValueError(
                    f"{where}: anatomically_correct {_cell(raw_anatomy)!r}; expected 'yes', 'no' or empty."
                )
            if (reader, image_id) in first_seen:
                first_name, first_row = first_seen[(reader, image_id)]
                raise ValueError(
                    f"{where}: duplicate answer by reader {reader!r} for image_id {image_id!r}, first given in "
                    f"{first_name}, data row {first_row}; expected one row per reader and image."
                )
            first_seen[(reader, image_id)] = (name, row)
            records.append(
                {
                    "reader": reader,
                    "image_id": image_id,
                    "truth": truth_by_id[image_id],
                    "judged": judged,
                    "anatomically_correct": anatomy,
                }
            )

    table = pd.DataFrame(records, columns=["reader", "image_id", "truth", "judged", "anatomically_correct"])
    readers = sorted(table["reader"].unique())
    n_images = len(truth_by_id)
    summary: dict[str, float] = {"readers": len(readers), **_measures(table, len(readers) * n_images)}
    per_reader = pd.DataFrame(
        [{"reader": reader, **_measures(table[table["reader"] == reader], n_images)} for reader in readers],
        columns=["reader", "answers", "unanswered", *MEASURES],
    )
    logger.info(
        "Scored %d answers from %d reader(s) on %d images: accuracy %.3f.",
        summary["answers"], len(readers), n_images, summary["accuracy"],
    )  # fmt: skip
    return summary, per_reader


def score_answers(answer_key: pd.DataFrame, answers: dict[str, pd.DataFrame]) -> tuple[dict[str, float], pd.DataFrame]:
    """Score returned reader sheets against the answer key.

    Args:
        answer_key: the key from ``build_reader_kit`` (at least ``image_id`` and ``truth``).
        answers: file name (used in error messages) -> returned sheet with columns ``reader,
            image_id, judged, anatomically_correct`` (``comment`` optional). A sheet may hold
            several readers. ``judged`` is ``real``/``synthetic`` and ``anatomically_correct``
            ``yes``/``no``, in any case and with stray spaces; an empty ``judged`` is not
            answered (counted, not an error).

    Returns:
        ``(summary, per_reader)``. ``summary`` has ``readers`` (count), ``answers`` (images
        judged, over all readers), ``unanswered`` (reader x image pairs not judged, rows
        missing from a sheet included), ``accuracy`` (judged == truth, over judged images),
        ``synthetic_detection_recall`` (synthetic judged synthetic), ``real_specificity``
        (real judged real), ``synthetic_judged_anatomically_correct`` and
        ``real_judged_anatomically_correct`` (share of ``yes`` among the images of that
        source with a yes/no anatomy answer). Shares are in [0, 1], NaN where the
        denominator is 0. ``per_reader`` has one row per reader (sorted) with columns
        ``reader, answers, unanswered`` and the five shares.

    Raises:
        ValueError: naming the file, the 1-based data row (header not counted), the value
            and what was expected, for a missing column, an empty reader, an unknown
            image_id, a value other than the allowed ones, or a second answer by the same
            reader for the same image (across files too).
    """
    return _score(answer_key, answers, key_name="answer_key")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _read_csv(path: str) -> pd.DataFrame:
    """A CSV as text cells (empty cells stay ``""``); unreadable files raise ``ValueError``."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:  # pandas' parser and empty-file errors are ValueErrors
        raise ValueError(f"{path}: could not read the CSV file ({error}).") from error


def _json_ready(summary: dict[str, float]) -> dict[str, float | None]:
    """NaN -> ``None`` (JSON ``null``): NaN is not valid JSON."""
    return {
        key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in summary.items()
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synthmed.metrics.reader_study",
        description="Blinded reader study of real versus synthetic images: score the returned answer sheets.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    score = commands.add_parser(
        "score",
        help="score returned answer sheets against the answer key",
        description=(
            "Check returned answer sheets (CSV, columns reader, image_id, judged, anatomically_correct, comment) "
            "against the answer key and print the overall and per-reader scores."
        ),
    )
    score.add_argument(
        "--key",
        required=True,
        metavar="KEY.csv",
        help="the answer key CSV written by the study coordinator (columns image_id, truth, label, source_index)",
    )
    score.add_argument(
        "answers",
        nargs="+",
        metavar="ANSWERS.csv",
        help="one or more returned answer sheets; a sheet may hold several readers, "
        "but each reader may answer each image only once over all sheets",
    )
    score.add_argument(
        "--json",
        metavar="OUT.json",
        default=None,
        help="also write the overall summary to this JSON file (NaN, where a share has no denominator, as null)",
    )
    return parser


def _format_summary(summary: dict[str, float]) -> str:
    lines = []
    for key, value in summary.items():
        shown = "n/a" if isinstance(value, float) and math.isnan(value) else (
            f"{value:.3f}" if isinstance(value, float) else str(value)
        )  # fmt: skip
        lines.append(f"{key:<40} {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m synthmed.metrics.reader_study``; returns the exit status.

    0 on success, 2 for an unreadable or invalid file (the message goes to stderr).
    """
    arguments = _parser().parse_args(argv)
    try:
        if len(set(arguments.answers)) != len(arguments.answers):
            raise ValueError(f"answers: expected each answer file once, got {arguments.answers}.")
        key = _read_csv(arguments.key)
        sheets = {path: _read_csv(path) for path in arguments.answers}
        summary, per_reader = _score(key, sheets, key_name=arguments.key)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(_format_summary(summary))
    print()
    print(per_reader.to_string(index=False, float_format=lambda value: f"{value:.3f}", na_rep="n/a"))
    if arguments.json is not None:
        try:
            Path(arguments.json).write_text(json.dumps(_json_ready(summary), indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            print(f"error: {arguments.json}: could not write the JSON summary ({error}).", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
