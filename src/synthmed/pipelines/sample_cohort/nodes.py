"""Node of the ``sample_cohort`` pipeline: parse the parameters, build the cohort, add its manifest."""

from __future__ import annotations

import logging
import time
from typing import Any

from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.datasets.file_folder import PUBLIC_SAMPLE_MANIFEST, encode
from synthmed.imaging.cohort import CohortConfig, build_cohort

logger = logging.getLogger(__name__)


def build_sample_cohort(params: dict[str, Any]) -> dict[str, bytes]:
    """Every file of data/01_raw/cohort (``subjects.csv``: one row per subject) and
    ``SAMPLE_MANIFEST.json``, the sha256 of each, by which the public-sample key recognises
    an untouched copy (``synthmed.datasets.secrets.is_public_sample``)."""
    config = from_params(CohortConfig, params, "sample_cohort")
    start = time.perf_counter()
    files, seconds = build_cohort(config)
    files[PUBLIC_SAMPLE_MANIFEST] = encode(PUBLIC_SAMPLE_MANIFEST,
                                           {"sha256": {name: sha256_bytes(data) for name, data in files.items()}})
    logger.info("Cohort: %d subjects, %d files, %.1f MB in %.1f s (%.2f s per subject on average)",
                config.n_subjects, len(files), sum(map(len, files.values())) / 1e6,
                time.perf_counter() - start, sum(seconds) / len(seconds))
    return files
