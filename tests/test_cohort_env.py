"""The cohort environment (conf/cohort, `kedro run --env cohort`) is consistent with itself: it
reads the cohort, its split and its slices agree on what a lesion is, and the generators' class
lists are the slices' finding classes."""

from __future__ import annotations

from kedro.config import OmegaConfigLoader

from tests.conftest import PROJECT_ROOT, load_parameters


def test_cohort_env_reads_the_cohort_folder() -> None:
    loader = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="cohort")
    assert loader["catalog"]["raw_sources"]["path"] == "data/01_raw/cohort"


def test_cohort_env_split_slices_and_generators_agree() -> None:
    params = load_parameters("cohort")
    split = params["preprocessing"]["split"]
    slices = params["extraction"]["slices"]
    assert split["strategy"] == "group" and split["stratify"] == "finding"
    assert slices["classes"] == "finding"
    # The split's lesion stratum and the slices' lesion class read the same label value.
    assert split["lesion_labels"] == slices["finding"]["lesion_labels"]
    classes = set(slices["finding"]["class_names"].values())
    for family in ("ddpm", "dcgan"):
        assert params[family]["model"]["num_classes"] == len(classes), family
        labels = {step["label"] for step in params[family]["sampling"]["plan"] if step["condition"] == "class"}
        assert labels == classes, family
    assert params["pix2pix"]["run"]["source"] == "slices"
    assert params["pix2pix"]["model"]["channels"] == 1
