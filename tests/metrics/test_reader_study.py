"""Blinded reader study kit: blinding invariants of the kit, scoring and the ``score`` CLI."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthmed.metrics.reader_study import ANSWER_COLUMNS, build_reader_kit, main, score_answers

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PER_SOURCE = 6
DISPLAY_PX = 32
CLASSES = ("normal", "nodule", "effusion")


def _images(n: int, channels: int, seed: int, *, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, channels, size, size)).astype(np.float32)


def _labels(n: int) -> list[str]:
    return [CLASSES[i % len(CLASSES)] for i in range(n)]


def _kit(channels: int = 1, seed: int = 0, **overrides: object) -> tuple[dict[str, object], pd.DataFrame]:
    arguments: dict[str, object] = {
        "real_labels": _labels(10),
        "synthetic_labels": _labels(9),
        "per_source": PER_SOURCE,
        "display_px": DISPLAY_PX,
        "seed": seed,
        "title": "Chest X-ray <test> study",
    }
    arguments.update(overrides)
    return build_reader_kit(_images(10, channels, 1), _images(9, channels, 2), **arguments)  # type: ignore[arg-type]


def _image_files(files: dict[str, object]) -> list[str]:
    return sorted(name for name in files if name.startswith("images/"))


# --------------------------------------------------------------------------------------------
# The kit
# --------------------------------------------------------------------------------------------


def test_kit_holds_both_sources_under_neutral_shuffled_ids() -> None:
    files, key = _kit()
    assert _image_files(files) == [f"images/img-{i:03d}.png" for i in range(1, 2 * PER_SOURCE + 1)]
    assert set(files) == {*_image_files(files), "sheet.html", "answers_template.csv", "INSTRUCTIONS.md"}
    assert list(key.columns) == ["image_id", "truth", "label", "source_index"]
    assert list(key["image_id"]) == [f"img-{i:03d}" for i in range(1, 2 * PER_SOURCE + 1)]
    assert key["truth"].value_counts().to_dict() == {"real": PER_SOURCE, "synthetic": PER_SOURCE}
    # Ids follow the shuffled order: in id order the truths are not grouped by source.
    truths = list(key.sort_values("image_id")["truth"])
    assert truths not in (sorted(truths), sorted(truths, reverse=True))
    # Each source index is a distinct, valid index, and the label is the one of that image.
    for truth, n, labels in (("real", 10, _labels(10)), ("synthetic", 9, _labels(9))):
        rows = key[key["truth"] == truth]
        assert rows["source_index"].is_unique
        assert rows["source_index"].between(0, n - 1).all()
        assert list(rows["label"]) == [labels[i] for i in rows["source_index"]]


def test_kit_takes_all_images_of_a_source_with_fewer_than_per_source() -> None:
    _, key = _kit(per_source=20)
    assert key["truth"].value_counts().to_dict() == {"real": 10, "synthetic": 9}
    assert sorted(key.loc[key["truth"] == "synthetic", "source_index"]) == list(range(9))


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB")])
def test_pngs_decode_to_display_px_in_one_mode_for_both_sources(channels: int, mode: str) -> None:
    files, key = _kit(channels=channels)
    truth_by_id = dict(zip(key["image_id"], key["truth"], strict=True))
    seen: dict[str, set[tuple[str, tuple[int, int], tuple[str, ...]]]] = {"real": set(), "synthetic": set()}
    for name in _image_files(files):
        data = files[name]
        assert isinstance(data, bytes)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            seen[truth_by_id[Path(name).stem]].add((image.mode, image.size, tuple(sorted(image.info))))
    assert seen["real"] == seen["synthetic"] == {(mode, (DISPLAY_PX, DISPLAY_PX), ())}


def test_png_is_a_nearest_neighbour_upscale_of_the_source_image() -> None:
    real = _images(10, 1, 1)
    files, key = _kit()
    row = key[key["truth"] == "real"].iloc[0]
    with Image.open(io.BytesIO(files[f"images/{row['image_id']}.png"])) as image:  # type: ignore[arg-type]
        pixels = np.asarray(image)
    expected = np.rint((real[row["source_index"], 0] + 1.0) / 2.0 * 255).astype(np.uint8)
    scale = DISPLAY_PX // 8
    np.testing.assert_array_equal(pixels, np.kron(expected, np.ones((scale, scale), dtype=np.uint8)))


def test_kit_never_carries_the_truth() -> None:
    files, key = _kit()
    assert not any(isinstance(content, pd.DataFrame) and "truth" in content.columns for content in files.values())
    for name, content in files.items():
        assert "real" not in name.lower() and "synthetic" not in name.lower() and "key" not in name.lower()
        if isinstance(content, str):
            assert "real_" not in content and "synthetic_" not in content, name

    template = files["answers_template.csv"]
    assert isinstance(template, pd.DataFrame)
    assert list(template.columns) == list(ANSWER_COLUMNS)
    assert list(template["image_id"]) == list(key["image_id"])
    assert (template[["reader", "judged", "anatomically_correct", "comment"]] == "").all().all()

    # Every card on the sheet is the same text apart from its id, class and embedded image.
    sheet = files["sheet.html"]
    assert isinstance(sheet, str)
    cards = re.findall(r'<div class="card">.*?</div>\s*</div>', sheet, flags=re.DOTALL)
    assert len(cards) == len(key)
    neutral = set()
    for card, (image_id, label) in zip(cards, zip(key["image_id"], key["label"], strict=True), strict=True):
        assert image_id in card and f"Class: {label}" in card
        stripped = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", card).replace(image_id, "ID")
        neutral.add(stripped.replace(f"Class: {label}", "Class: LABEL"))
    assert len(neutral) == 1
    # The sheet is self-contained, with the answer boxes and an escaped title.
    assert "Chest X-ray &lt;test&gt; study" in sheet and "src=\"http" not in sheet
    for box in ("> real<", "> synthetic<", "> yes<", "> no<"):
        assert sheet.count(box) == len(key), box

    instructions = files["INSTRUCTIONS.md"]
    assert isinstance(instructions, str)
    for phrase in ("`real` or `synthetic`", "`yes`", "`no`", "One file per reader", "study coordinator", "answer key"):
        assert phrase in instructions, phrase


def _comparable(files: dict[str, object]) -> dict[str, object]:
    return {
        name: (content.to_dict() if isinstance(content, pd.DataFrame) else content) for name, content in files.items()
    }


def test_same_seed_gives_the_same_kit_and_another_seed_another() -> None:
    files_a, key_a = _kit(seed=3)
    files_b, key_b = _kit(seed=3)
    assert _comparable(files_a) == _comparable(files_b)
    pd.testing.assert_frame_equal(key_a, key_b)
    _, key_c = _kit(seed=4)
    assert not key_a.equals(key_c)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"real": np.zeros((4, 2, 8, 8), np.float32)}, r"real with shape \(N, C, H, W\).*\(4, 2, 8, 8\)"),
        ({"synthetic": np.zeros((9, 1, 16, 16), np.float32)}, r"same \(C, H, W\).*\(1, 16, 16\)"),
        ({"real_labels": _labels(3)}, r"real_labels.*3 labels for 10 images"),
        ({"synthetic_labels": [0] * 9}, r"class names.*synthetic_labels.*0 \(int\)"),
        ({"per_source": 0}, r"per_source.*>= 1.*got 0"),
        ({"display_px": 4}, r"display_px.*8.*got 4"),
        ({"real": np.full((10, 1, 8, 8), np.nan, np.float32)}, r"finite values in real.*image 0"),
        ({"synthetic": np.full((9, 1, 8, 8), 255.0, np.float32)}, r"synthetic in \[-1, 1\].*255"),
    ],
)
def test_build_reader_kit_rejects_bad_inputs(overrides: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "real": _images(10, 1, 1),
        "synthetic": _images(9, 1, 2),
        "real_labels": _labels(10),
        "synthetic_labels": _labels(9),
        "per_source": PER_SOURCE,
        "display_px": DISPLAY_PX,
        "title": "t",
    }
    arguments.update(overrides)
    real, synthetic = arguments.pop("real"), arguments.pop("synthetic")
    with pytest.raises(ValueError, match=message):
        build_reader_kit(real, synthetic, **arguments)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------

SMALL_KEY = pd.DataFrame(
    {
        "image_id": ["img-001", "img-002", "img-003", "img-004"],
        "truth": ["real", "real", "synthetic", "synthetic"],
        "label": ["normal", "nodule", "normal", "nodule"],
        "source_index": [0, 3, 1, 2],
    }
)


def _sheet(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["reader", "image_id", "judged", "anatomically_correct"])
    frame["comment"] = ""
    return frame


def test_perfect_reader_scores_accuracy_one() -> None:
    files, key = _kit()
    sheet = files["answers_template.csv"].copy()  # type: ignore[union-attr]
    sheet["reader"] = "dr-a"
    sheet["judged"] = key["truth"].str.upper()
    sheet["anatomically_correct"] = " yes "
    summary, per_reader = score_answers(key, {"answers_dr-a.csv": sheet})
    assert summary["readers"] == 1 and summary["answers"] == len(key) and summary["unanswered"] == 0
    assert summary["accuracy"] == summary["synthetic_detection_recall"] == summary["real_specificity"] == 1.0
    assert list(per_reader["reader"]) == ["dr-a"] and per_reader.loc[0, "accuracy"] == 1.0


def test_always_real_reader_has_full_specificity_and_no_recall() -> None:
    sheet = _sheet([("b", image_id, "real", "yes") for image_id in SMALL_KEY["image_id"]])
    summary, _ = score_answers(SMALL_KEY, {"b.csv": sheet})
    assert summary["real_specificity"] == 1.0
    assert summary["synthetic_detection_recall"] == 0.0
    assert summary["accuracy"] == 0.5


def test_scores_on_a_hand_made_example() -> None:
    # Worked out by hand (see the comments): reader A judges all four images, reader B
    # leaves img-001 unanswered but rates its anatomy; A leaves the anatomy of img-004 empty.
    sheet_a = _sheet(
        [
            ("A", "img-001", " Real ", "Yes"),  # real: right, anatomy yes
            ("A", "img-002", "synthetic", "no"),  # real: wrong, anatomy no
            ("A", "img-003", "SYNTHETIC", "yes"),  # synthetic: right, anatomy yes
            ("A", "img-004", "real", ""),  # synthetic: wrong, anatomy not rated
        ]
    )
    sheet_b = _sheet(
        [
            ("B", "img-001", "", "yes"),  # not judged; anatomy yes (real)
            ("B", "img-002", "real", "yes"),  # real: right
            ("B", "img-003", "real", "no"),  # synthetic: wrong
            ("B", "img-004", "synthetic", "NO"),  # synthetic: right
        ]
    )
    summary, per_reader = score_answers(SMALL_KEY, {"a.csv": sheet_a, "b.csv": sheet_b})
    expected = {
        "readers": 2,
        "answers": 7,
        "unanswered": 1,
        "accuracy": 4 / 7,
        "synthetic_detection_recall": 2 / 4,
        "real_specificity": 2 / 3,
        "synthetic_judged_anatomically_correct": 1 / 3,
        "real_judged_anatomically_correct": 3 / 4,
    }
    assert summary.keys() == expected.keys()
    for name, value in expected.items():
        assert summary[name] == pytest.approx(value), name
    rows = per_reader.set_index("reader")
    assert rows.loc["A", "accuracy"] == 0.5 and rows.loc["B", "accuracy"] == pytest.approx(2 / 3)
    assert rows.loc["A", "synthetic_judged_anatomically_correct"] == 1.0
    assert rows.loc["B", "synthetic_judged_anatomically_correct"] == 0.0
    assert rows.loc["A", "real_judged_anatomically_correct"] == 0.5
    assert rows.loc["B", "real_judged_anatomically_correct"] == 1.0
    assert list(rows["unanswered"]) == [0, 1]


def test_empty_denominators_give_nan_and_missing_rows_count_as_unanswered() -> None:
    sheet = _sheet([("c", "img-001", "real", ""), ("c", "img-002", "", "")])
    summary, per_reader = score_answers(SMALL_KEY, {"c.csv": sheet})
    assert summary["answers"] == 1 and summary["unanswered"] == 3
    no_denominator = (
        "synthetic_detection_recall",
        "synthetic_judged_anatomically_correct",
        "real_judged_anatomically_correct",
    )
    for name in no_denominator:
        assert math.isnan(summary[name]) and math.isnan(per_reader.loc[0, name]), name
    nobody = _sheet([("d", "img-001", "", "")])
    summary, _ = score_answers(SMALL_KEY, {"d.csv": nobody})
    assert summary["answers"] == 0 and math.isnan(summary["accuracy"])


def test_blank_cells_read_as_nan_are_not_answered() -> None:
    sheet = _sheet([("e", "img-001", "real", "yes")])
    sheet.loc[1] = ["e", "img-003", np.nan, np.nan, np.nan]
    summary, _ = score_answers(SMALL_KEY, {"e.csv": sheet})
    assert summary["answers"] == 1 and summary["unanswered"] == 3


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [("r", "img-001", "real", "yes"), ("r", "img-009", "real", "yes")],
            r"bad\.csv, data row 2: unknown image_id 'img-009'",
        ),
        ([("r", "img-001", "maybe", "yes")], r"bad\.csv, data row 1: judged 'maybe'; expected 'real', 'synthetic'"),
        (
            [("r", "img-001", "real", "perhaps")],
            r"bad\.csv, data row 1: anatomically_correct 'perhaps'; expected 'yes', 'no'",
        ),
        (
            [("r", "img-001", "real", "yes"), ("r", "img-001", "synthetic", "no")],
            r"bad\.csv, data row 2: duplicate.*'r'.*'img-001'.*bad\.csv, data row 1",
        ),
        ([("r", "img-001", "real", "yes"), (" ", "img-002", "real", "yes")], r"bad\.csv, data row 2: empty reader"),
    ],
)
def test_invalid_answers_name_the_file_row_and_value(rows: list[tuple[str, str, str, str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score_answers(SMALL_KEY, {"bad.csv": _sheet(rows)})


def test_duplicates_across_files_and_missing_columns_are_rejected() -> None:
    one = _sheet([("r", "img-001", "real", "yes")])
    with pytest.raises(ValueError, match=r"two\.csv, data row 1: duplicate.*first given in one\.csv, data row 1"):
        score_answers(SMALL_KEY, {"one.csv": one, "two.csv": one.copy()})
    with pytest.raises(ValueError, match=r"nocol\.csv: missing column\(s\) \['judged'\]"):
        score_answers(SMALL_KEY, {"nocol.csv": one.drop(columns=["judged"])})
    with pytest.raises(ValueError, match=r"answer_key: missing column\(s\) \['truth'\]"):
        score_answers(SMALL_KEY.drop(columns=["truth"]), {"one.csv": one})


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _write_study(tmp_path: Path) -> tuple[Path, list[Path]]:
    key_path = tmp_path / "key.csv"
    SMALL_KEY.to_csv(key_path, index=False)
    paths = []
    for reader, judged in (("A", ["real", "synthetic", "synthetic", "synthetic"]), ("B", ["real", "", "real", "real"])):
        path = tmp_path / f"answers_{reader}.csv"
        sheet = _sheet([(reader, i, j, "yes") for i, j in zip(SMALL_KEY["image_id"], judged, strict=True)])
        sheet.to_csv(path, index=False)
        paths.append(path)
    return key_path, paths


def test_cli_scores_and_writes_the_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_path, paths = _write_study(tmp_path)
    out = tmp_path / "scores.json"
    status = main(["score", "--key", str(key_path), *map(str, paths), "--json", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    answers = {str(path): pd.read_csv(path, dtype=str, keep_default_na=False) for path in paths}
    expected, per_reader = score_answers(SMALL_KEY, answers)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert written[name] is None, name  # NaN is not valid JSON
        else:
            assert written[name] == pytest.approx(value), name
    assert "accuracy" in printed and "synthetic_detection_recall" in printed
    assert all(reader in printed for reader in per_reader["reader"])


def test_cli_reports_a_bad_file_and_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_path, paths = _write_study(tmp_path)
    bad = pd.read_csv(paths[1], dtype=str, keep_default_na=False)
    bad.loc[2, "judged"] = "maybe"
    bad.to_csv(paths[1], index=False)
    status = main(["score", "--key", str(key_path), *map(str, paths)])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("error: ") and str(paths[1]) in error and "data row 3" in error and "'maybe'" in error

    status = main(["score", "--key", str(tmp_path / "missing.csv"), str(paths[0])])
    error = capsys.readouterr().err
    assert status == 2 and "missing.csv" in error


def test_cli_runs_as_a_module_and_documents_its_arguments(tmp_path: Path) -> None:
    key_path, paths = _write_study(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "synthmed.metrics.reader_study", "score", "--key", str(key_path), str(paths[0])],
        capture_output=True, text=True, cwd=PROJECT_ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--help"])
    assert exit_info.value.code == 0
