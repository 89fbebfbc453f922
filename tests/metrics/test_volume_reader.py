"""The reader kit of volumes (issue 11, item 4): sheets through the lesion centre, blinding, scoring."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthmed.metrics.reader_study import main, score_answers
from synthmed.metrics.volume_reader import build_volume_reader_kit, lesion_centre, orthogonal_sheet

SIDE = 16
MARGIN = 3
DISPLAY_PX = 2 * 3 * (SIDE + 2 * MARGIN)  # an integer upscale (x2) of the sheet


def _volume_with_block(centre: tuple[int, int, int], rng: np.random.Generator, *, shape=(SIDE,) * 3,
                       half: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(1, D, H, W)`` dim noise in [-1, -0.2] with a bright cube of side ``2 half + 1`` at ``centre``; its mask."""
    volume = rng.uniform(-1.0, -0.2, size=(1, *shape)).astype(np.float32)
    mask = np.zeros((1, *shape), np.uint8)
    block = (0, *(slice(c - half, c + half + 1) for c in centre))
    volume[block], mask[block] = 1.0, 1
    return volume, mask


def _views_at(sheet: np.ndarray, shape: tuple[int, int, int], margin: int) -> dict[str, tuple[slice, slice]]:
    """Where each view sits in a sheet: the axial (H, D), coronal (W, D) and sagittal (W, H) sections."""
    d, h, w = shape
    sizes = {"axial": (h, d), "coronal": (w, d), "sagittal": (w, h)}
    out, left = {}, 0
    for plane, (rows, columns) in sizes.items():
        out[plane] = (slice(margin, margin + rows), slice(left + margin, left + margin + columns))
        left += columns + 2 * margin
    assert sheet.shape == (1, max(r for r, _ in sizes.values()) + 2 * margin, left)
    return out


@pytest.mark.parametrize("shape", [(SIDE,) * 3, (12, 16, 20)])
def test_each_view_passes_through_the_lesion_centre(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    centre = (4, 9, 13)
    volume, mask = _volume_with_block(centre, rng, shape=shape)
    assert lesion_centre(mask) == centre
    sheet = orthogonal_sheet(volume, centre, margin=MARGIN, marks=False)
    d, h, w = centre
    # Superior / anterior up: row 0 of a view is the last index of its vertical axis.
    expected = {"axial": (shape[1] - 1 - h, d), "coronal": (shape[2] - 1 - w, d), "sagittal": (shape[2] - 1 - w, h)}
    for plane, (rows, columns) in _views_at(sheet, shape, MARGIN).items():
        view = sheet[0, rows, columns]
        bright = np.argwhere(view == 1.0)
        # The section cuts the cube through its middle: a 3 x 3 square centred where the centre lies.
        assert len(bright) == 9, plane
        assert tuple(bright.mean(axis=0)) == expected[plane], plane
    # Nothing bright outside the views without marks; the margins are background.
    outside = sheet[0].copy()
    for rows, columns in _views_at(sheet, shape, MARGIN).values():
        outside[rows, columns] = -1.0
    assert (outside == -1.0).all()


def test_marks_point_at_the_centre_row_and_column_from_the_margin() -> None:
    centre = (5, 7, 11)
    volume, _ = _volume_with_block(centre, np.random.default_rng(1))
    sheet = orthogonal_sheet(volume, centre, margin=MARGIN, marks=True)[0]
    plain = orthogonal_sheet(volume, centre, margin=MARGIN, marks=False)[0]
    views = _views_at(sheet[None], (SIDE,) * 3, MARGIN)
    for rows, columns in views.values():
        np.testing.assert_array_equal(sheet[rows, columns], plain[rows, columns])  # the lesion is not drawn over
        view = sheet[rows, columns]
        centre_row, centre_column = (int(v) for v in np.argwhere(view == 1.0).mean(axis=0))
        ticked_rows = {r - rows.start for r, c in np.argwhere(sheet == 1.0)
                       if c in (columns.start - 1, columns.stop) and rows.start <= r < rows.stop}
        ticked_columns = {c - columns.start for r, c in np.argwhere(sheet == 1.0)
                          if r in (rows.start - 1, rows.stop) and columns.start <= c < columns.stop}
        assert ticked_rows == {centre_row} and ticked_columns == {centre_column}


def test_lesion_centre_takes_the_largest_component_and_stays_inside_it() -> None:
    mask = np.zeros((SIDE,) * 3, np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # a small second lesion: with it, the centroid of all voxels is (9, 5, 5)
    mask[8:13, 4:7, 4:7] = 1  # the lesion: centroid (10, 5, 5)
    assert lesion_centre(mask) == (10, 5, 5)
    # Two cubes touching at a corner are one lesion (26-neighbourhood), larger than a third of 40 voxels.
    corner = np.zeros((SIDE,) * 3, np.uint8)
    corner[4:7, 4:7, 4:7] = corner[7:10, 7:10, 7:10] = 1
    corner[12:14, 0:4, 0:5] = 1
    assert lesion_centre(corner) == (6, 6, 6)
    ring = np.zeros((SIDE,) * 3, np.uint8)  # a hollow square: its centroid is outside it
    ring[5, 4:11, 4:11] = 1
    ring[5, 5:10, 5:10] = 0
    centre = lesion_centre(ring)
    assert ring[centre] == 1 and abs(centre[1] - 7) + abs(centre[2] - 7) == 3
    with pytest.raises(ValueError, match="real lesion mask 0: expected a lesion mask with at least one voxel"):
        lesion_centre(np.zeros((SIDE,) * 3), name="real lesion mask 0")


def _sources(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list, list]:
    rng = np.random.default_rng(seed)
    real_centres = [tuple(int(v) for v in rng.integers(2, SIDE - 2, 3)) for _ in range(5)]
    synthetic_centres = [tuple(int(v) for v in rng.integers(2, SIDE - 2, 3)) for _ in range(7)]
    real = [_volume_with_block(c, rng) for c in real_centres]
    synthetic = [_volume_with_block(c, rng) for c in synthetic_centres]
    return (np.stack([v for v, _ in real]), np.stack([m for _, m in real]), np.stack([v for v, _ in synthetic]),
            np.stack([m for _, m in synthetic]), real_centres, synthetic_centres)


def _kit(seed: int = 0, per_source: int = 10):
    real, real_masks, synthetic, synthetic_masks, _, _ = _sources()
    return build_volume_reader_kit(real, real_masks, synthetic, synthetic_masks, per_source=per_source,
                                   display_px=DISPLAY_PX, seed=seed, title="3D <study>", margin=MARGIN)


def test_volume_kit_is_blinded_and_its_key_maps_every_id() -> None:
    real, _, synthetic, _, real_centres, synthetic_centres = _sources()
    files, key = _kit()
    # The same number of each source (all 5 real, 5 of the 7 synthetic), ids in shuffled order.
    assert key["truth"].value_counts().to_dict() == {"real": 5, "synthetic": 5}
    assert list(key["image_id"]) == [f"img-{i:03d}" for i in range(1, 11)]
    truths = list(key["truth"])
    assert truths not in (sorted(truths), sorted(truths, reverse=True))
    images = sorted(name for name in files if name.startswith("images/"))
    assert images == [f"images/{image_id}.png" for image_id in key["image_id"]]
    assert set(files) == {*images, "sheet.html", "answers_template.csv", "INSTRUCTIONS.md"}
    # Both sources: one PNG mode and size, no metadata; the same nearest-neighbour upscale of the sheet.
    seen = {"real": set(), "synthetic": set()}
    for row in key.itertuples():
        with Image.open(io.BytesIO(files[f"images/{row.image_id}.png"])) as image:
            image.load()
            seen[row.truth].add((image.mode, image.size, tuple(sorted(image.info))))
            pixels = np.asarray(image)
        volumes, centres = (real, real_centres) if row.truth == "real" else (synthetic, synthetic_centres)
        # The key maps the id to its volume and the centre its views go through.
        assert (row.centre_d, row.centre_h, row.centre_w) == centres[row.source_index]
        sheet = orthogonal_sheet(volumes[row.source_index], centres[row.source_index], margin=MARGIN)
        expected = np.rint((sheet[0] + 1.0) / 2.0 * 255).astype(np.uint8)
        np.testing.assert_array_equal(pixels, np.kron(expected, np.ones((2, 2), np.uint8)))
    assert seen["real"] == seen["synthetic"] == {("L", (DISPLAY_PX, DISPLAY_PX // 3), ())}
    # No file names or carries the source; every card reads the same apart from its id and image.
    for name, content in files.items():
        assert not re.search(r"real|synthetic|key", name, flags=re.IGNORECASE)
        if isinstance(content, str):
            assert "real_" not in content and "synthetic_" not in content, name
        if isinstance(content, pd.DataFrame):
            assert "truth" not in content.columns
    cards = re.findall(r'<div class="card">.*?</div>\s*</div>', files["sheet.html"], flags=re.DOTALL)
    assert len(cards) == 10 and "Class:" not in files["sheet.html"]
    assert len({re.sub(r"base64,[A-Za-z0-9+/=]+", "", card).replace(i, "ID")
                for card, i in zip(cards, key["image_id"], strict=True)}) == 1
    # The instructions say what to judge: real or synthetic, and whether the lesion is plausible.
    for text in (files["INSTRUCTIONS.md"], files["sheet.html"]):
        assert "all three through the centre of the volume" in text
    assert "`real` or `synthetic`" in files["INSTRUCTIONS.md"]
    assert "`yes` if the lesion" in files["INSTRUCTIONS.md"] and "Lesion plausible:" in files["sheet.html"]
    assert "3D &lt;study&gt;" in files["sheet.html"]


def test_volume_kit_per_source_and_seed() -> None:
    _, key = _kit(per_source=3)
    assert key["truth"].value_counts().to_dict() == {"real": 3, "synthetic": 3}
    _, again = _kit()
    pd.testing.assert_frame_equal(again, _kit()[1])
    assert not again.equals(_kit(seed=1)[1])


def test_volume_kit_refuses_a_volume_without_a_lesion_or_of_another_size() -> None:
    real, real_masks, synthetic, synthetic_masks, _, _ = _sources()
    empty = synthetic_masks.copy()
    empty[3] = 0
    with pytest.raises(ValueError, match="synthetic lesion mask 3: expected a lesion mask with at least one voxel"):
        build_volume_reader_kit(real, real_masks, synthetic, empty, per_source=2, title="t")
    with pytest.raises(ValueError, match=r"same \(1, D, H, W\) as the real ones, \(1, 16, 16, 16\), got "
                                         r"\(1, 16, 16, 15\)"):
        build_volume_reader_kit(real, real_masks, synthetic[..., :-1], synthetic_masks[..., :-1], per_source=2,
                                title="t")


def test_scoring_the_volume_kit_with_the_2d_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, key = _kit()
    right = pd.DataFrame({"reader": "dr-a", "image_id": key["image_id"], "judged": key["truth"],
                          "anatomically_correct": "yes"})
    wrong = right.assign(reader="dr-b", judged=key["truth"].map({"real": "synthetic", "synthetic": "real"}))
    summary, per_reader = score_answers(key, {"a.csv": right, "b.csv": wrong})
    assert per_reader.set_index("reader")["accuracy"].to_dict() == {"dr-a": 1.0, "dr-b": 0.0}
    assert summary["accuracy"] == 0.5 and summary["answers"] == 20
    # The command line scores the kit's key (with its extra columns) unchanged.
    key.to_csv(tmp_path / "answer_key.csv", index=False)
    right.to_csv(tmp_path / "answers_a.csv", index=False)
    wrong.to_csv(tmp_path / "answers_b.csv", index=False)
    for answers, accuracy in (("answers_a.csv", "1.000"), ("answers_b.csv", "0.000")):
        assert main(["score", "--key", str(tmp_path / "answer_key.csv"), str(tmp_path / answers)]) == 0
        assert re.search(rf"^accuracy\s+{accuracy}$", capsys.readouterr().out, flags=re.MULTILINE)
