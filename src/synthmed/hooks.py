"""Project hooks."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from synthmed.datasets.secrets import PseudonymisationKeyDataset

logger = logging.getLogger(__name__)

KEY_DATASET = "pseudonymisation_key"
SOURCE_DATASET = "raw_sources"


class PseudonymisationKeyHook:
    """Puts the pseudonymisation key into the catalog and checks it before a run.

    The key is a credential, not a parameter: kedro-mlflow logs parameters to MLflow.
    Checking it in ``before_pipeline_run`` makes a missing key stop the run before any
    node has written anything.
    """

    @hook_impl
    def after_catalog_created(self, catalog: Any, conf_creds: dict[str, Any]) -> None:
        source = catalog.get(SOURCE_DATASET) if SOURCE_DATASET in catalog else None
        catalog[KEY_DATASET] = PseudonymisationKeyDataset(
            credentials=(conf_creds or {}).get("pseudonymisation"), source=source
        )

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if KEY_DATASET in pipeline.inputs():
            catalog.load(KEY_DATASET)
