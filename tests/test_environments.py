"""Each Kedro environment is consistent with itself: conf/base (and the test and gpu profiles on top
of it) reads the multi-patient cohort, splits it by patient and classes slices by finding;
conf/template reads the one-template sample and classes slices by plane. In every environment the
split and the slices agree on what a lesion is, and the generators' class lists are the slices'
classes."""

from __future__ import annotations

import pytest
from kedro.config import OmegaConfigLoader

from tests.conftest import PROJECT_ROOT, load_parameters


def _catalog(env: str) -> dict:
    return OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), base_env="base", default_run_env=env)["catalog"]


@pytest.mark.parametrize(("env", "folder"), [("base", "cohort"), ("test", "cohort"), ("gpu", "cohort"),
                                             ("template", "sample")])
def test_each_environment_reads_its_sample_folder(env: str, folder: str) -> None:
    catalog = _catalog(env)
    assert catalog["raw_sources"]["path"] == f"data/01_raw/{folder}"
    # The builders always write their own folder, whatever raw_sources is.
    assert catalog["raw_sources@cohort"]["path"] == "data/01_raw/cohort"
    assert catalog["raw_sources@sample"]["path"] == "data/01_raw/sample"


def _slice_classes(params: dict) -> set[str]:
    slices = params["extraction"]["slices"]
    if slices["classes"] == "finding":
        return set(slices["finding"]["class_names"].values())
    return set(slices["planes"])


@pytest.mark.parametrize("env", ["base", "test", "gpu"])
def test_the_cohort_profiles_split_by_patient_and_class_slices_by_finding(env: str) -> None:
    params = load_parameters(env)
    split = params["preprocessing"]["split"]
    slices = params["extraction"]["slices"]
    assert split["strategy"] == "group" and split["stratify"] == "finding"
    assert slices["classes"] == "finding"
    # The split's lesion stratum and the slices' lesion class read the cohort's lesion label.
    assert split["lesion_labels"] == slices["finding"]["lesion_labels"] == [4]
    assert params["extraction"]["volumes"]["lesion_labels"] == [4]
    assert params["pix2pix"]["run"]["source"] == "slices"
    assert params["pix2pix"]["model"]["channels"] == 1


def test_the_template_profile_classes_slices_by_plane_and_maps_fundus_patches() -> None:
    params = load_parameters("template")
    assert params["extraction"]["slices"]["classes"] == "plane"
    assert params["preprocessing"]["split"]["strategy"] == "auto"  # one brain: slabs, not patients
    assert params["pix2pix"]["run"]["source"] == "patches"
    assert params["pix2pix"]["model"]["channels"] == 3


@pytest.mark.parametrize("env", ["base", "test", "gpu", "template"])
def test_the_generators_sample_the_slices_classes(env: str) -> None:
    params = load_parameters(env)
    classes = _slice_classes(params)
    for family in ("ddpm", "dcgan"):
        assert params[family]["model"]["num_classes"] == len(classes), family
        labels = {step["label"] for step in params[family]["sampling"]["plan"] if step["condition"] == "class"}
        assert labels <= classes and labels, family
        if env != "test":  # the test profile samples one class only, to stay small
            assert labels == classes, family
