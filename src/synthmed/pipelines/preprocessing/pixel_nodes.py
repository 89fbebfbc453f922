"""The ``check_pixels`` node of the ``preprocessing`` pipeline: text in pixels and faces.

Runs before ``deidentify_sources``: its table tells that node which items to quarantine
and which copies to redact or deface, and ``preprocess_items`` which arrays to fix. The
checks themselves are ``synthmed.privacy.pixel_checks``. Each item is decided here, per
item: a DICOM item whose pixels a check would change is quarantined (its copy, made by
ingestion, keeps its pixels and is never re-encoded).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from synthmed.core.manifest import parse_spacing
from synthmed.datasets.array_store import ArrayStore
from synthmed.pipelines.preprocessing.candidates import dicom_candidates
from synthmed.privacy.pixel_checks import PIXEL_COLUMNS, PixelChecksConfig, check_item, unchecked_row

logger = logging.getLogger(__name__)


def check_pixels(
    ingestion_manifest: pd.DataFrame,
    ingested_images: ArrayStore,
    deid_candidate_items: pd.DataFrame,
    params: dict[str, Any],
    deid_params: dict[str, Any],
) -> pd.DataFrame:
    """One row per item (``PIXEL_COLUMNS``): text boxes found, face plane, quarantine reason.

    DICOM items are judged by the header of their first instance: the quarantine rule of
    ``preprocessing.deid`` (text likely) and Body Part Examined (head or not), as ingestion's
    one pass recorded them in the candidate table (no DICOM file is parsed here).
    """
    config = PixelChecksConfig.from_params(params)
    candidates = dicom_candidates(deid_candidate_items, ingestion_manifest, deid_params)
    rows = []
    for item in tqdm(ingestion_manifest.itertuples(), total=len(ingestion_manifest),
                     desc="checking pixels", unit="item", disable=None):
        try:
            at_risk, body_part = False, None
            if item.format == "dicom":
                candidate = candidates[item.item_id]
                at_risk, body_part = candidate.at_risk, candidate.body_part or None
            row = check_item(
                ingested_images[item.item_id], item_id=item.item_id, item_format=item.format,
                modality=str(item.modality), spacing=parse_spacing(item.spacing_mm), at_risk=at_risk,
                body_part=body_part, config=config,
            )
        except Exception as exc:  # noqa: BLE001 - one item never stops the run: unchecked, it stays out
            # The class only: an exception text may quote a header value, and this table is pushed.
            reason = f"pixel check failed ({type(exc).__name__})"
            logger.warning("Quarantined item %s: %s", item.item_id, reason)
            row = unchecked_row(item.item_id, item.format, str(item.modality), reason)
        rows.append(row)
    table = pd.DataFrame(rows, columns=PIXEL_COLUMNS)
    logger.info("Pixel checks: %d item(s) read by OCR, %d with text, %d head volume(s), %d quarantined",
                int(table["ocr_checked"].sum()), int((table["text_boxes"] > 0).sum()), int(table["head"].sum()),
                int((table["reason"] != "").sum()))
    return table
