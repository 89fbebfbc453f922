"""Each Kedro environment is consistent with itself: conf/base (and the test and gpu profiles on top
of it) reads the multi-patient cohort, splits it by patient and classes slices by finding;
conf/template reads the one-template sample and classes slices by plane. In every environment the
split and the slices agree on what a lesion is, and the generators' class lists are the classes of
the source they learn (conf/base's DCGAN: the lesion patches, normal / lesion, at their size)."""

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


def _source_classes(params: dict, family: str) -> set[str]:
    if params[family]["run"]["source"] == "lesion_patches":
        from synthmed.imaging.lesion_patches import CLASS_NAMES

        return set(CLASS_NAMES)
    return _slice_classes(params)


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
def test_the_generators_sample_the_classes_of_their_source(env: str) -> None:
    params = load_parameters(env)
    for family in ("ddpm", "dcgan"):
        classes = _source_classes(params, family)
        assert params[family]["model"]["num_classes"] == len(classes), family
        labels = {step["label"] for step in params[family]["sampling"]["plan"] if step["condition"] == "class"}
        assert labels <= classes and labels, family
        if env != "test":  # the test profile samples one class only, to stay small
            assert labels == classes, family


@pytest.mark.parametrize(("env", "source"), [("base", "lesion_patches"), ("test", "lesion_patches"),
                                             ("gpu", "lesion_patches"), ("template", "slices")])
def test_the_dcgan_learns_lesion_patches_at_their_size_where_there_are_lesions(env: str, source: str) -> None:
    params = load_parameters(env)
    dcgan, patches = params["dcgan"], params["extraction"]["lesion_patches"]
    assert dcgan["run"]["source"] == source
    if source == "lesion_patches":
        assert patches["enabled"] and dcgan["model"]["image_size"] == patches["patches"]["patch_px"]
        assert params["evaluation"]["sources"]["lesion_patches"]["image_px"] == patches["patches"]["patch_px"]
    else:  # the template brain has no lesion: no patches, and the DCGAN learns its slices
        assert not patches["enabled"]
        assert params["extraction"]["slices"]["size_px"] % dcgan["model"]["image_size"] == 0
