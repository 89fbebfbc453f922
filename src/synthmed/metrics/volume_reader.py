"""A blinded reader study of volumes: orthogonal-view sheets through the lesion (issue 11, item 4).

Each volume ``(1, D, H, W)`` in [-1, 1] becomes one 2D sheet: its axial, coronal and sagittal
sections through one voxel, left to right, superior / anterior up, on a background of -1 (the
sections of `orthogonal_sections`, the report's orthogonal views). The voxel is the centre of the
volume's lesion by one rule for both sources (`lesion_centre`: the centroid of the largest
26-connected lesion component of the volume's lesion mask: the real patient's mask, the lesion
written into the synthetic volume's label map), so neither the section position nor the marks
tell the sources apart. Short white ticks in the margin of each view mark the centre's row and
column (``marks``), leaving the lesion itself untouched.

The sheets then go through the 2D kit, `synthmed.metrics.reader_study.build_reader_kit` (equal
numbers drawn, shuffled, neutral ids, one PNG writer for both sources, the answer key apart),
with the volume wording (`VOLUME_WORDING`); the returned answers are scored by its ``score``
command unchanged. ``build_volume_reader_kit`` adds the centre voxel of every sheet to the key.

Blinding rests, beyond the 2D kit's rules, on: the same intensity window ([-1, 1], no
per-volume scaling), the same sheet geometry for every volume (one shape is required), and the
same centre rule. What the caller chooses (``pipelines.study_3d``): real and synthetic volumes of
the same kind of crop (whole-brain crops: a lesion crop centres its lesion), and different
patients in the two sources.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.imaging.volumes import single_volume as _volume
from synthmed.metrics.reader_study import Wording, build_reader_kit

pd = lazy_import("pandas")
ndimage = lazy_import("scipy.ndimage")

VOLUME_WORDING = Wording(
    what=(
        "Each image is one brain volume shown as three sections, left to right axial, coronal and "
        "sagittal (superior and anterior up), all three through the centre of the volume's lesion; "
        "the short white ticks at the edges of each section mark that centre's row and column."
    ),
    plausible_question="Lesion plausible",
    plausible_answer=(
        "`yes` if the lesion (its shape, intensity, border and place) and the anatomy around it "
        "are plausible, otherwise `no`"
    ),
)


def orthogonal_sections(volume: np.ndarray, centre: Sequence[int]) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal sections of ``(D, H, W)`` through ``centre``, superior / anterior up.

    Row 0 is the bottom (matplotlib's ``origin="lower"``); `orthogonal_sheet` flips them for an image.
    """
    d, h, w = (int(v) for v in centre)
    return {"axial": volume[:, :, w].T, "coronal": volume[:, h, :].T, "sagittal": volume[d, :, :].T}


def lesion_centre(mask: np.ndarray, *, name: str = "mask") -> tuple[int, int, int]:
    """The voxel the views go through: centroid (rounded) of the largest 26-connected lesion component.

    Where the rounded centroid falls outside that component (a curved lesion), the component's
    voxel nearest to it. A ball placed at voxel ``c`` gives ``c``.

    Raises:
        ValueError: the mask holds no lesion voxel.
    """
    lesion = _volume(mask, name) > 0
    if not lesion.any():
        raise ValueError(f"{name}: expected a lesion mask with at least one voxel, got an empty mask.")
    labels, count = ndimage.label(lesion, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    voxels = np.argwhere(labels == int(np.argmax(sizes)) + 1)
    centre = np.rint(voxels.mean(axis=0)).astype(int)
    if labels[tuple(centre)] != int(np.argmax(sizes)) + 1:
        centre = voxels[int(np.argmin(((voxels - centre) ** 2).sum(axis=1)))]
    return tuple(int(v) for v in centre)  # type: ignore[return-value]


def orthogonal_sheet(volume: np.ndarray, centre: Sequence[int], *, margin: int = 3,
                     marks: bool = True) -> np.ndarray:
    """``(1, rows, columns)`` float in [-1, 1]: the three sections side by side, each framed by ``margin``.

    Background -1; with ``marks`` a tick of ``margin - 1`` white pixels on each side of each
    section at the centre's row and column. Sections are cut by `orthogonal_sections` and flipped
    so superior / anterior are up; views of unequal size are top-aligned.
    """
    array = _volume(volume, "volume")
    if len(centre) != 3 or not all(0 <= int(c) < s for c, s in zip(centre, array.shape, strict=True)):
        raise ValueError(f"Expected a centre voxel (d, h, w) inside the volume of shape {array.shape}, "
                         f"got {tuple(centre)}.")
    if margin < 0 or (marks and margin < 2):
        raise ValueError(f"Expected margin >= 2 with marks (>= 0 without), got {margin}.")
    spot = np.zeros(array.shape, bool)
    spot[tuple(int(c) for c in centre)] = True
    sections = {plane: np.flipud(view) for plane, view in orthogonal_sections(array, centre).items()}
    where = {plane: np.argwhere(np.flipud(view))[0] for plane, view in orthogonal_sections(spot, centre).items()}
    height = max(view.shape[0] for view in sections.values()) + 2 * margin
    width = sum(view.shape[1] + 2 * margin for view in sections.values())
    sheet = np.full((height, width), -1.0, np.float32)
    left = 0
    for plane, view in sections.items():  # axial, coronal, sagittal
        rows, columns = view.shape
        sheet[margin:margin + rows, left + margin:left + margin + columns] = view
        if marks:  # the frame's outermost pixel stays background: ticks of adjacent views never touch
            row, column = (margin + int(v) for v in where[plane])
            start, stop = left + margin, left + margin + columns
            sheet[row, left + 1:start] = sheet[row, stop:stop + margin - 1] = 1.0
            sheet[1:margin, left + column] = sheet[margin + rows:2 * margin + rows - 1, left + column] = 1.0
        left += columns + 2 * margin
    return np.clip(sheet, -1.0, 1.0)[None]


def volume_sheets(volumes: np.ndarray, masks: np.ndarray, *, name: str, margin: int = 3,
                  marks: bool = True) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """One `orthogonal_sheet` per volume through its `lesion_centre`; ``((N, 1, rows, cols), centres)``."""
    images, lesions = np.asarray(volumes), np.asarray(masks)
    if images.ndim != 5 or images.shape[1] != 1 or lesions.shape[0] != images.shape[0] \
            or lesions.shape[-3:] != images.shape[-3:]:
        raise ValueError(f"Expected {name} volumes (N, 1, D, H, W) and lesion masks of the same N and (D, H, W), "
                         f"got {images.shape} and {lesions.shape}.")
    centres = [lesion_centre(lesions[k], name=f"{name} lesion mask {k}") for k in range(len(images))]
    sheets = [orthogonal_sheet(images[k], centres[k], margin=margin, marks=marks) for k in range(len(images))]
    return np.stack(sheets).astype(np.float32), centres


def build_volume_reader_kit(real: np.ndarray, real_masks: np.ndarray, synthetic: np.ndarray,
                            synthetic_masks: np.ndarray, *, per_source: int, display_px: int = 684,
                            seed: int = 0, title: str, margin: int = 3,
                            marks: bool = True) -> tuple[dict[str, object], pd.DataFrame]:
    """The 2D reader kit (`reader_study.build_reader_kit`) of orthogonal-view sheets of volumes with lesions.

    Args:
        real, synthetic: ``(N, 1, D, H, W)`` float in [-1, 1], the same ``(D, H, W)``.
        real_masks, synthetic_masks: their lesion masks (non-zero: lesion); every volume needs a lesion.
        per_source: volumes drawn from each source; at most the smaller source's count, so both
            sources give the same number.
        display_px, seed, title: as in ``build_reader_kit`` (``display_px``: the sheet's width).
        margin, marks: of `orthogonal_sheet`.

    Returns:
        ``(files, answer_key)``: the kit's files and the key (``image_id, truth, label, source_index``
        and the centre voxel ``centre_d, centre_h, centre_w`` each sheet goes through).
    """
    if np.asarray(real).shape[1:] != np.asarray(synthetic).shape[1:]:
        raise ValueError(f"Expected synthetic volumes with the same (1, D, H, W) as the real ones, "
                         f"{np.asarray(real).shape[1:]}, got {np.asarray(synthetic).shape[1:]}; a different size "
                         "would unblind the readers.")
    # The same number from each source: build_reader_kit takes all of a source that has fewer.
    per_source = min(per_source, len(real), len(synthetic)) if type(per_source) is int else per_source
    real_sheets, real_centres = volume_sheets(real, real_masks, name="real", margin=margin, marks=marks)
    synthetic_sheets, synthetic_centres = volume_sheets(synthetic, synthetic_masks, name="synthetic",
                                                        margin=margin, marks=marks)
    files, key = build_reader_kit(real_sheets, synthetic_sheets, real_labels=[""] * len(real_sheets),
                                  synthetic_labels=[""] * len(synthetic_sheets), per_source=per_source,
                                  display_px=display_px, seed=seed, title=title, wording=VOLUME_WORDING)
    centres = {"real": real_centres, "synthetic": synthetic_centres}
    picked = np.array([centres[truth][int(index)] for truth, index in zip(key["truth"], key["source_index"],
                                                                          strict=True)]).reshape(-1, 3)
    return files, key.assign(centre_d=picked[:, 0], centre_h=picked[:, 1], centre_w=picked[:, 2])
