"""A trained generator folder travels: a model card, class names, and `synthmed generate` without Kedro."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synthmed.datasets.generator import GeneratorDataset
from synthmed.generators.base import TrainedGenerator
from synthmed.generators.export import generate_to_folder
from synthmed.generators.registry import config_from_params, get_family
from tests.generators.test_training import TINY

ROOT = Path(__file__).resolve().parents[2]
CARD = {"synthmed_version": "0.1.0", "source": "slices", "split": "train", "n_train": 32,
        "per_class": {"normal": 20, "lesion": 12}, "data_sha256": {"images": "ab" * 32},
        "training": {"steps": 4, "batch_size": 4}, "final": {"loss": 0.25}}


def _saved(folder: Path, family: str, class_names=("normal", "lesion"), card=CARD) -> Path:
    config = config_from_params(family, TINY[family])
    models = get_family(family).build(config, 0)
    GeneratorDataset(path=str(folder)).save(TrainedGenerator(family, config, models, tuple(class_names), card))
    return folder


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.png")))).hexdigest()


def test_the_saved_folder_has_a_model_card_and_its_class_names(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "ddpm", "ddpm")
    card = (folder / "MODEL_CARD.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["family"] == "ddpm" and front["classes"] == ["normal", "lesion"] and front["image_size"] == 16
    assert "normal: 20, lesion: 12" in card and "Not checked by the memorisation gate".lower() in card.lower()
    assert GeneratorDataset(path=str(folder)).load().class_names == ("normal", "lesion")
    assert "MODEL_CARD.md" in (folder / "checksums.json").read_text()  # covered by the checksums


@pytest.mark.parametrize("family", ["ddpm", "dcgan"])
def test_generate_draws_the_asked_class_reproducibly(tmp_path: Path, family: str) -> None:
    folder = _saved(tmp_path / family, family)
    table = generate_to_folder(folder, tmp_path / "a", 5, label="lesion", seed=3, batch_size=2)
    assert len(table) == 5 and set(table["label"]) == {"lesion"}
    assert len(list((tmp_path / "a/lesion").glob("*.png"))) == 5
    images = np.load(tmp_path / "a/images.npy")
    assert images.shape == (5, 1, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert pd.read_csv(tmp_path / "a/provenance.csv")["seed"].tolist() == [3, 3, 4, 4, 5]
    generate_to_folder(folder, tmp_path / "b", 5, label="lesion", seed=3, batch_size=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    everything = generate_to_folder(folder, tmp_path / "c", 5, seed=3)  # no label: the classes in turn
    assert everything["label"].value_counts().to_dict() == {"normal": 3, "lesion": 2}


def test_generate_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "ddpm", "ddpm")
    with pytest.raises(ValueError, match=r"--label 'tumour' is not a class .* \['normal', 'lesion'\]"):
        generate_to_folder(folder, tmp_path / "x", 2, label="tumour")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        generate_to_folder(folder, tmp_path / "full", 2)
    pix2pix = _saved(tmp_path / "pix2pix", "pix2pix", class_names=())
    with pytest.raises(ValueError, match="needs real masks or images"):
        generate_to_folder(pix2pix, tmp_path / "y", 2)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_command_samples_without_kedro_and_names_a_corrupt_folder(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "dcgan", "dcgan")
    command = [sys.executable, "-m", "synthmed", "generate", "--model", str(folder), "--n", "4", "--label", "normal",
               "--out", str(tmp_path / "out")]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": str(Path(sys.executable).parent)}  # no project, no Kedro
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "4 images" in done.stdout and "not checked by the memorisation gate" in done.stdout
    assert len(list((tmp_path / "out/normal").glob("*.png"))) == 4
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    broken = subprocess.run([*command[:-1], str(tmp_path / "out2")], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300, env=env)
    assert broken.returncode == 2 and weights.name in broken.stderr and not (tmp_path / "out2").exists()
