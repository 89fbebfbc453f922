"""The de-identified DICOM copies ingestion made, as preprocessing reads them.

Ingestion de-identifies each DICOM file in the pass that decodes it and leaves the copies
and one row per item (``synthmed.privacy.dicom_deid.CANDIDATE_COLUMNS``) in the local
candidate layer (``data/02_intermediate/deid_candidates``). Preprocessing never parses a
raw DICOM file: the pixel checks take the header facts they need from these rows, and
``deidentify_sources`` publishes the copies of the items every check released. The layer is
checked against the manifest and the configured profile first, so that copies from another
ingestion run or another ``preprocessing.deid`` are never published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthmed.core.lazy import lazy_import
from synthmed.privacy.dicom_deid import CANDIDATE_COLUMNS, DicomDeidConfig

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")

_RERUN = "run the ingestion pipeline again (`kedro run --pipelines ingestion`, or `dvc repro`)"


@dataclass(frozen=True)
class Candidate:
    """One DICOM item's row of the candidate table."""

    item_id: str
    instances: int
    actions: str
    reason: str
    at_risk: bool
    body_part: str


def _flag(value: Any) -> bool:
    """A boolean cell of the CSV table (read as bool, or as text when the table is empty)."""
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def dicom_candidates(table: pd.DataFrame, manifest: pd.DataFrame,
                     deid_params: Mapping[str, Any]) -> dict[str, Candidate]:
    """Item id -> `Candidate` of every DICOM item of ``manifest``, after checking the layer.

    Raises:
        ValueError: the table lacks columns, misses or adds DICOM items, holds another
            series checksum than the manifest, or was made with another de-identification
            profile than ``preprocessing.deid`` now says.
    """
    missing_columns = sorted(set(CANDIDATE_COLUMNS) - set(table.columns))
    if missing_columns:
        raise ValueError(f"The de-identification candidate table (deid_candidate_items) lacks columns "
                         f"{missing_columns}; expected {CANDIDATE_COLUMNS}. It was written by an older synthmed: "
                         f"{_RERUN}.")
    dicom = manifest[manifest["format"] == "dicom"]
    expected = {} if dicom.empty else dict(zip(dicom["item_id"].astype(str), dicom["source_sha256"].astype(str)))
    rows = {str(row.item_id): row for row in table.itertuples()}
    absent, extra = sorted(set(expected) - set(rows)), sorted(set(rows) - set(expected))
    if absent or extra:
        raise ValueError(f"The de-identification candidates do not match the ingestion manifest: "
                         f"{len(absent)} DICOM item(s) without a row (first: {absent[:1]}), {len(extra)} row(s) of "
                         f"no DICOM item (first: {extra[:1]}); {_RERUN}.")
    profile = DicomDeidConfig.from_params(deid_params).fingerprint()
    candidates = {}
    for item_id, sha256 in expected.items():
        row = rows[item_id]
        if str(row.source_sha256) != sha256:
            raise ValueError(f"The de-identified copies of item {item_id} were made from other files than the "
                             f"manifest's (series sha256 {row.source_sha256}, manifest {sha256}); {_RERUN}.")
        if str(row.deid_profile) != profile:
            raise ValueError(f"The de-identified copies of item {item_id} were made with another "
                             f"preprocessing.deid profile (fingerprint {row.deid_profile}) than the one configured "
                             f"now ({profile}); {_RERUN} so that the copies follow the current profile.")
        candidates[item_id] = Candidate(item_id, int(row.instances), str(row.actions), str(row.reason),
                                        _flag(row.at_risk), str(row.body_part))
    return candidates
