"""The release pipeline: a trained generator folder, copied with its evaluation and gate figures in the card."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from synthmed.core.checksums import read_listing, verify_listing
from synthmed.datasets.file_folder import FileFolderDataset
from synthmed.datasets.generator import GeneratorDataset
from synthmed.generators import common
from synthmed.pipelines.release.nodes import release_model
from synthmed.protocols import release
from tests.generators.test_generate_cli import _saved

METRICS = {
    "ddpm.fidelity.fid": 15.5, "ddpm.fidelity.fid_low": 4.0, "ddpm.fidelity.fid_high": 42.9,
    "ddpm.fidelity.fid_floor_halves": 21.1, "ddpm.fidelity.fid_floor_halves_low": 3.9,
    "ddpm.fidelity.fid_floor_halves_high": 63.5, "ddpm.fidelity.kid": 5.43, "ddpm.fidelity.kid_floor_halves": 4.78,
    "ddpm.fidelity.precision": 0.86, "ddpm.fidelity.recall": 0.93, "ddpm.fidelity.density": 0.71,
    "ddpm.fidelity.coverage": 0.5,
    "ddpm.utility.real_synthetic.balanced_accuracy_delta": -0.0333,
    "ddpm.utility.real_synthetic.balanced_accuracy_delta_low": -0.0707,
    "ddpm.utility.real_synthetic.balanced_accuracy_delta_high": 0.0,
    "ddpm.memorisation.calibrated": 1.0, "ddpm.memorisation.pixel_threshold": 0.9388,
    "ddpm.memorisation.feature_threshold": 0.9998, "ddpm.memorisation.percentile": 99.9,
    "ddpm.memorisation.self_test_recall": 1.0, "ddpm.memorisation.candidate_count": 4.0,
    "ddpm.memorisation.flagged_fraction": 0.5, "ddpm.memorisation.flagged_fraction.checkpoint_aaaa": 2 / 3,
    "ddpm.memorisation.flagged_fraction.checkpoint_bbbb": 0.0,
    "dcgan.fidelity.fid": 777.25,  # another family's numbers stay out of the ddpm card
}
# The evaluation's <family>_memorisation.csv (the columns used); the last row was not scored.
MEMORISATION = pd.DataFrame({"label": ["normal", "normal", "lesion", "lesion", "lesion"],
                             "memorisation_flagged": [True, False, True, False, False],
                             "nn_pixel_similarity": [0.99, 0.5, 0.98, 0.4, float("nan")]})


def _release(source: Path, target: Path, metrics=METRICS) -> Path:
    files = release_model(FileFolderDataset(path=str(source)).load(), "ddpm", metrics, MEMORISATION)
    FileFolderDataset(path=str(target)).save(files)
    return target


def test_the_released_folder_loads_like_the_trained_one_with_the_figures_in_its_card(tmp_path):
    source = _saved(tmp_path / "models/ddpm", "ddpm")
    target = _release(source, tmp_path / "release/ddpm")
    # Weights and configuration byte for byte; the card changed; checksums.json covers the new card.
    for path in source.rglob("*"):
        rel = path.relative_to(source).as_posix()
        if path.is_file() and rel not in ("MODEL_CARD.md", "checksums.json"):
            assert (target / rel).read_bytes() == path.read_bytes(), rel
    records = read_listing(target / "checksums.json")
    assert set(records) == set(read_listing(source / "checksums.json"))
    verify_listing(target, records)
    assert GeneratorDataset(path=str(target)).load().class_names == ("normal", "lesion")  # `synthmed generate`'s load

    card = (target / "MODEL_CARD.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["family"] == "ddpm" and front["classes"] == ["normal", "lesion"]
    assert front["evaluation"]["fidelity.fid"] == 15.5 and front["evaluation"]["fidelity.kid_floor_halves"] == 4.78
    assert front["evaluation"]["utility.real_synthetic.balanced_accuracy_delta"] == -0.0333
    gate = front["memorisation_gate"]
    assert gate["memorisation.self_test_recall"] == 1.0 and gate["memorisation.pixel_threshold"] == 0.9388
    assert gate["flagged_fraction_per_class"] == {"lesion": 0.5, "normal": 0.5}
    assert gate["flagged_fraction_per_checkpoint"] == {"aaaa": 2 / 3, "bbbb": 0.0}
    assert "| FID | 15.5 | 4 to 42.9 |" in card and "| FID floor (real vs real, halves) | 21.1 | 3.9 to 63.5 |" in card
    assert "| fraction flagged, checkpoint aaaa | 0.667 |" in card and "777.25" not in card
    # The pointer to the report is replaced, not kept beside the figures; the rest of the card stays.
    assert "This folder holds the model only" not in card and card.count("## Evaluation") == 1
    assert "## Use" in card and "## Training data" in card and "not checked by the memorisation gate" in card


def test_release_refuses_an_altered_or_unevaluated_folder(tmp_path):
    source = _saved(tmp_path / "models/ddpm", "ddpm")
    with pytest.raises(release.ReleaseError, match=r"no 'ddpm.fidelity.fid'.*evaluation"):
        _release(source, tmp_path / "release/a", metrics={"dcgan.fidelity.fid": 1.0})
    weights = next(source.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"bad!")
    with pytest.raises(release.ReleaseError, match=rf"{weights.name} does not match checksums.json.*repro training"):
        _release(source, tmp_path / "release/b")
    (source / "extra.txt").write_text("not written by training")
    with pytest.raises(release.ReleaseError, match="extra.txt"):
        _release(source, tmp_path / "release/c")
    assert not (tmp_path / "release").exists()


def test_the_release_module_names_the_generator_folder_files_as_training_does():
    assert (release.CHECKSUMS, release.MODEL_CARD, release.MANIFEST) == (common.CHECKSUMS, common.MODEL_CARD,
                                                                         common.MANIFEST)
    # The section the release replaces is in the training card's template.
    template = Path(common.__file__).parents[1] / "templates/model_card.md.j2"
    assert release.EVALUATION_HEADING + "\n" in template.read_text()


CARD = """---
license: other
synthetic: true
---
# Synthetic dataset

- **Gate:** 3 dropped.
- **Evaluation:** this folder is published before the evaluation runs, so its figures are not
  here: see the report (the `rebalanced.*` rows are this
  folder's gate).

## Intended use

Research.
"""
HEADLINE = {"ddpm.fid": 16.2, "ddpm.fid_low": 4.1, "ddpm.fid_high": 43.0, "ddpm.fid_n": 8.0,
            "ddpm.fid_floor": 21.0, "ddpm.fid_floor_low": 3.9, "ddpm.fid_floor_high": 63.5,
            "ddpm.utility_delta": -0.0333, "ddpm.utility_delta_low": -0.0707, "ddpm.utility_delta_high": 0.0,
            "gate.self_test_recall": 1.0, "published.shortfall.lesion": 18.0}


def test_the_released_dataset_card_carries_the_evaluation_headline():
    card = release.dataset_card_with_headline(CARD, HEADLINE)
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["synthetic"] is True and meta["evaluation_headline"] == HEADLINE
    body = card.split("---\n", 2)[2]
    assert body.index("## Evaluation headline") < body.index("## Intended use")
    assert "published before the evaluation runs" not in body and '"Evaluation headline" below' in body
    assert "| `ddpm.fid` | 16 [4, 43]" in body  # rounded to its interval, N shown
    assert "| `published.shortfall.lesion` | 18 |" in body
    assert "too few images" in body  # N = 8: flagged in words, with the legend
    with pytest.raises(release.ReleaseError, match="headline.json is empty"):
        release.dataset_card_with_headline(CARD, {})


def test_release_dataset_copies_the_published_files_and_extends_only_the_card(tmp_path):
    from synthmed.pipelines.release.nodes import release_dataset

    published = FileFolderDataset(path=str(tmp_path / "rebalanced"))
    published.save({"README.md": CARD, "images/lesion/a.png": b"\x89PNG-a", "data/images.npy": b"npy-bytes",
                    "metadata.csv": "file_name,label\nimages/lesion/a.png,lesion\n"})
    released = FileFolderDataset(path=str(tmp_path / "released"))
    released.save(release_dataset(published.load(), HEADLINE))

    for rel in ("images/lesion/a.png", "data/images.npy", "metadata.csv"):
        assert (tmp_path / "released" / rel).read_bytes() == (tmp_path / "rebalanced" / rel).read_bytes()
    assert "## Evaluation headline" in (tmp_path / "released/README.md").read_text()
    assert released.load().files  # its checksum listing verifies
    (tmp_path / "rebalanced/README.md").unlink()
    with pytest.raises(Exception, match="README.md"):
        release_dataset(FileFolderDataset(path=str(tmp_path / "rebalanced")).load(), HEADLINE)
