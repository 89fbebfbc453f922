"""Release: a trained generator's folder with its evaluation and gate figures in the model card.

The training stage writes ``data/06_models/<family>`` before anything is evaluated, so its
``MODEL_CARD.md`` can only point to the report. The release stage runs after evaluation and
writes ``data/09_release/models/<family>``: the same files byte for byte (weights,
``generator.json``), the card with the family's evaluation headline and the memorisation
gate's figures in place of that pointer (and in its YAML block), and a new ``checksums.json``
in the generator folder's format, so ``synthmed generate --model`` and ``dvc get`` work on it
unchanged.

Nothing here imports torch: the files are copied as bytes, each checked against the
training stage's ``checksums.json`` first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from synthmed.core.checksums import LISTING_FORMAT, ChecksumError, FileDigest, read_listing, sha256_bytes
from synthmed.core.templates import render
from synthmed.metrics.report import flags_used, headline_lines

# The generator folder's names (synthmed.generators.common; repeated here so that releasing
# imports no torch; tests/pipelines/test_release.py checks they agree).
CHECKSUMS = "checksums.json"
MODEL_CARD = "MODEL_CARD.md"
MANIFEST = "generator.json"
# The card section the release replaces (model_card.md.j2); the next "## " heading ends it.
EVALUATION_HEADING = "## Evaluation and the memorisation gate"

# Headline: (label, metrics.json key after "<family>.", interval keys or None). The floors are
# real-vs-real values of the same metric: a synthetic value near its floor is as good as
# this much data can show.
HEADLINE = (
    ("FID", "fidelity.fid", ("fidelity.fid_low", "fidelity.fid_high")),
    ("FID floor (real vs real, halves)", "fidelity.fid_floor_halves",
     ("fidelity.fid_floor_halves_low", "fidelity.fid_floor_halves_high")),
    ("KID", "fidelity.kid", None),
    ("KID floor (real vs real, halves)", "fidelity.kid_floor_halves", None),
    ("precision", "fidelity.precision", None),
    ("recall", "fidelity.recall", None),
    ("density", "fidelity.density", None),
    ("coverage", "fidelity.coverage", None),
    ("utility: balanced accuracy, real + synthetic minus real",
     "utility.real_synthetic.balanced_accuracy_delta",
     ("utility.real_synthetic.balanced_accuracy_delta_low", "utility.real_synthetic.balanced_accuracy_delta_high")),
)
GATE = (
    ("pixel threshold (cosine similarity)", "memorisation.pixel_threshold"),
    ("feature threshold (cosine similarity)", "memorisation.feature_threshold"),
    ("threshold percentile of held-out similarities", "memorisation.percentile"),
    ("self-test recall (planted copies found)", "memorisation.self_test_recall"),
    ("samples checked", "memorisation.candidate_count"),
    ("fraction flagged", "memorisation.flagged_fraction"),
)


class ReleaseError(ValueError):
    """A model folder or the evaluation's numbers cannot be released as they are."""


def _number(metrics: Mapping[str, float], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def headline(family: str, metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """The family's evaluation headline from ``metrics.json``: label, value and 95% interval.

    Raises:
        ReleaseError: ``metrics.json`` has no fidelity numbers for ``family`` (evaluation did
            not run for it).
    """
    if _number(metrics, f"{family}.fidelity.fid") is None:
        raise ReleaseError(
            f"data/08_reporting/metrics.json has no '{family}.fidelity.fid': the evaluation has not measured "
            f"the {family} samples. Run `kedro run --pipelines evaluation` (or `dvc repro evaluation`) first.")
    rows = []
    for label, key, interval in HEADLINE:
        value = _number(metrics, f"{family}.{key}")
        if value is None:
            continue
        low, high = (_number(metrics, f"{family}.{k}") for k in interval) if interval else (None, None)
        rows.append({"label": label, "key": key, "value": value, "low": low, "high": high})
    return rows


def gate_figures(family: str, metrics: Mapping[str, float], memorisation: pd.DataFrame) -> dict[str, Any]:
    """The memorisation gate over the family's samples: thresholds, self-test, fraction flagged per class (from
    the evaluation's ``<family>_memorisation.csv``) and per sampled checkpoint (from ``metrics.json``, which
    also counts the samples of earlier checkpoints)."""
    rows = [{"label": label, "key": key, "value": value} for label, key in GATE
            if (value := _number(metrics, f"{family}.{key}")) is not None]
    per_class: dict[str, float] = {}
    if {"label", "memorisation_flagged"} <= set(memorisation.columns):
        scored = memorisation
        if "nn_pixel_similarity" in memorisation.columns:  # NaN where the gate could not run
            scored = memorisation[memorisation["nn_pixel_similarity"].notna()]
        flagged = scored["memorisation_flagged"].astype(str).str.lower().isin(("true", "1", "1.0"))
        per_class = {str(name): float(group.mean())
                     for name, group in flagged.groupby(scored["label"].fillna("").astype(str)) if str(name)}
    prefix = f"{family}.memorisation.flagged_fraction.checkpoint_"
    per_checkpoint = {key[len(prefix):]: value for key in sorted(metrics)
                      if key.startswith(prefix) and (value := _number(metrics, key)) is not None}
    return {"rows": rows, "calibrated": _number(metrics, f"{family}.memorisation.calibrated") == 1.0,
            "per_class": per_class, "per_checkpoint": per_checkpoint}


def _front_matter(card: str) -> tuple[dict[str, Any], str]:
    match = re.match(r"---\n(.*?)\n---\n", card, flags=re.DOTALL)
    if not match:
        return {}, card
    return yaml.safe_load(match.group(1)) or {}, card[match.end():]


def release_card(card: str, family: str, rows: list[dict[str, Any]], gate: dict[str, Any]) -> str:
    """``card`` (the training stage's MODEL_CARD.md) with the evaluation and gate figures.

    The YAML block gains ``evaluation`` and ``memorisation_gate`` maps (machine-readable); the
    section ``EVALUATION_HEADING`` is replaced by tables of the same numbers (appended when a
    card has no such section).
    """
    meta, body = _front_matter(card)
    meta["evaluation"] = {row["key"]: row["value"] for row in rows}
    meta["memorisation_gate"] = {row["key"]: row["value"] for row in gate["rows"]} | {
        "flagged_fraction_per_class": gate["per_class"], "flagged_fraction_per_checkpoint": gate["per_checkpoint"]}
    section = render("model_release.md.j2", family=family, rows=rows, gate=gate).rstrip("\n") + "\n"
    start = body.find(EVALUATION_HEADING)
    if start < 0:
        body = body.rstrip("\n") + "\n\n" + section
    else:
        end = body.find("\n## ", start + len(EVALUATION_HEADING))
        body = body[:start] + section + ("" if end < 0 else "\n" + body[end + 1:])
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body


def checksum_listing(files: Mapping[str, bytes]) -> bytes:
    """``checksums.json`` for ``files``, in ``synthmed.core.checksums.write_listing``'s format and layout."""
    records = {rel: FileDigest(sha256_bytes(data), len(data)).to_json() for rel, data in sorted(files.items())}
    payload = {"format": LISTING_FORMAT, "files": records}
    return (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode()


def verified_files(root: Path, listed: Callable[[], list[str]], read: Callable[[str], bytes]) -> dict[str, bytes]:
    """Every file of the generator folder ``root`` that its ``checksums.json`` records, read and verified.

    Args:
        listed: the folder's files (relative POSIX paths).
        read: reads one of them.

    Raises:
        ReleaseError: no ``checksums.json``, a recorded file missing or altered, or a file the
            training stage did not record.
    """
    fix = (f"re-run training (`dvc repro training`) or restore the folder (`dvc checkout {root.as_posix()}`), "
           "then release again.")
    names = set(listed())
    if CHECKSUMS not in names or MANIFEST not in names:
        raise ReleaseError(f"{root} has no {CHECKSUMS} or {MANIFEST}: it is not a complete synthmed generator "
                           f"folder; {fix}")
    try:
        records = read_listing(root / CHECKSUMS, fix=fix)
    except ChecksumError as exc:
        raise ReleaseError(str(exc)) from exc
    unrecorded = sorted(names - set(records) - {CHECKSUMS})
    if unrecorded:
        raise ReleaseError(f"{root} holds {len(unrecorded)} file(s) its checksums.json does not record "
                           f"(first: {unrecorded[0]}); only what training wrote is released; {fix}")
    files = {}
    for rel, record in sorted(records.items()):
        if rel not in names:
            raise ReleaseError(f"{root / rel} is missing (recorded in {CHECKSUMS}); {fix}")
        data = read(rel)
        found = sha256_bytes(data)
        if found != record.sha256 or (record.size is not None and record.size != len(data)):
            raise ReleaseError(f"{root / rel} does not match {CHECKSUMS}: expected sha256 {record.sha256}, "
                               f"found {found}; {fix}")
        files[rel] = data
    return files


def release_folder(files: Mapping[str, bytes], family: str, metrics: Mapping[str, float],
                   memorisation: pd.DataFrame) -> dict[str, bytes]:
    """The released folder's files: ``files`` (verified) with the extended card and a new ``checksums.json``."""
    if MODEL_CARD not in files:
        raise ReleaseError(f"The {family} generator folder has no {MODEL_CARD} (written by training since the "
                           "model cards exist): re-run training (`dvc repro training`), then release again.")
    card = release_card(files[MODEL_CARD].decode("utf-8"), family, headline(family, metrics),
                        gate_figures(family, metrics, memorisation))
    released = {rel: data for rel, data in files.items() if rel != CHECKSUMS} | {MODEL_CARD: card.encode("utf-8")}
    return released | {CHECKSUMS: checksum_listing(released)}


# ------------------------------------------------------------------ the published dataset

DATASET_CARD = "README.md"
DATASET_HEADLINE_HEADING = "## Evaluation headline"
# The published card says its figures are elsewhere (it is written before the evaluation runs);
# the released card has them, so that sentence is replaced.
_PENDING_EVALUATION = re.compile(r"- \*\*Evaluation:\*\* this folder is published before the evaluation runs.*?"
                                 r"folder's gate\)\.\n", flags=re.DOTALL)


def dataset_card_with_headline(card: str, headline: Mapping[str, float]) -> str:
    """The published dataset's card (``README.md`` of the rebalanced folder) with the evaluation headline.

    The YAML block gains ``evaluation_headline`` (the numbers of ``headline.json``); a section
    ``DATASET_HEADLINE_HEADING`` (each number rounded to its interval, with N, floors and flags in
    words, as ``synthmed headline`` prints them) goes before the card's first ``## `` section.

    Raises:
        ReleaseError: the headline is empty (the evaluation has not run).
    """
    if not headline:
        raise ReleaseError("data/08_reporting/headline.json is empty: run the evaluation stage "
                           "(`dvc repro evaluation`) before releasing the dataset.")
    meta, body = _front_matter(card)
    meta["evaluation_headline"] = {name: float(value) for name, value in headline.items()}
    lines = headline_lines(headline)
    section = render("dataset_release.md.j2", lines=lines,
                     flags=flags_used("\n".join(text for _, text in lines))).rstrip("\n") + "\n\n"
    body = _PENDING_EVALUATION.sub(f"- **Evaluation:** the headline of the run that released this folder is in "
                                   f"\"{DATASET_HEADLINE_HEADING[3:]}\" below.\n", body)
    start = body.find("\n## ")
    body = body.rstrip("\n") + "\n\n" + section if start < 0 else body[:start + 1] + section + body[start + 1:]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body
