"""Lesion placement (issue 11 item 3): the requested centre and size realised exactly in the label map."""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.imaging.cohort import CSF, GREY, LESION, WHITE
from synthmed.imaging.lesion_placement import LesionRequest, ball_offsets, place_lesion, radius_for_volume

SPACING = (1.0, 1.25, 2.0)  # anisotropic on purpose: the ball is a ball in mm, not in voxels


def phantom() -> np.ndarray:
    """Nested boxes: background, CSF, grey matter, white matter (a 30 x 28 x 16 voxel head)."""
    labels = np.zeros((30, 28, 16), dtype=np.uint8)
    labels[1:-1, 1:-1, 1:-1] = CSF
    labels[2:-2, 2:-2, 2:-2] = GREY
    labels[6:-6, 6:-6, 4:-4] = WHITE
    return labels


def analytic_ball(shape: tuple[int, ...], centre: tuple[int, int, int], radius_mm: float) -> np.ndarray:
    """Every voxel whose centre lies within ``radius_mm`` of ``centre``, written from the definition."""
    grid = np.indices(shape, dtype=np.float64)
    distance2 = sum(((grid[a] - centre[a]) * SPACING[a]) ** 2 for a in range(3))
    return distance2 <= radius_mm**2


def test_a_radius_request_writes_exactly_the_analytic_ball_at_the_requested_voxel():
    labels = phantom()
    before = labels.copy()
    request = LesionRequest(radius_mm=4.0, location=(15, 14, 8))
    result, placed = place_lesion(labels, SPACING, request)
    expected = analytic_ball(labels.shape, (15, 14, 8), 4.0)
    assert np.array_equal(result == LESION, expected)
    assert np.array_equal(result[~expected], before[~expected])  # nothing else changed
    assert np.array_equal(labels, before) and result.dtype == labels.dtype  # the input is not modified
    assert placed.centre_voxel == (15, 14, 8) and placed.centroid_voxel == (15.0, 14.0, 8.0)
    assert placed.voxels == int(expected.sum())
    assert placed.volume_ml == pytest.approx(expected.sum() * np.prod(SPACING) / 1000)
    assert placed.centre_mm == (15.0, 17.5, 16.0)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (10, 20, 30)
    assert place_lesion(labels, SPACING, request, affine=affine)[1].centre_mm == (-5.0, 34.0, 38.0)
    row = placed.row()
    assert row["requested_radius_mm"] == 4.0 and row["realised_centre_voxel"] == "15 14 8"


@pytest.mark.parametrize("volume_ml", [0.05, 0.2, 0.33])
def test_a_volume_request_writes_the_closest_grid_ball_centred_exactly(volume_ml):
    labels = phantom()
    result, placed = place_lesion(labels, SPACING, LesionRequest(volume_ml=volume_ml, location=(15, 14, 8)))
    mask = result == LESION
    assert np.array_equal(mask, analytic_ball(labels.shape, (15, 14, 8), placed.radius_mm))
    assert placed.centroid_voxel == (15.0, 14.0, 8.0)
    voxel_ml = np.prod(SPACING) / 1000
    assert placed.volume_ml == pytest.approx(mask.sum() * voxel_ml)
    # No other grid ball (whole shells) around that centre is closer to the request.
    offsets = ball_offsets(6.0, np.array(SPACING))
    distances = np.sqrt(((offsets * np.array(SPACING)) ** 2).sum(axis=1))
    other_volumes = [(distances <= d + 1e-9).sum() * voxel_ml for d in np.unique(distances)]
    assert abs(placed.volume_ml - volume_ml) == pytest.approx(min(abs(v - volume_ml) for v in other_volumes))


def test_a_named_tissue_centres_the_lesion_in_it_and_keeps_it_inside_the_allowed_tissues():
    labels = phantom()
    # Grey matter is a thin shell next to CSF: most of its voxels have no room for the ball.
    for seed, tissue in [(s, t) for s in range(5) for t in ("white_matter", "grey_matter")]:
        result, placed = place_lesion(labels, SPACING, LesionRequest(radius_mm=2.5, location=tissue, seed=seed))
        assert labels[placed.centre_voxel] == {"white_matter": WHITE, "grey_matter": GREY}[tissue]
        assert np.isin(labels[result == LESION], (GREY, WHITE)).all()
        assert np.array_equal(result == LESION, analytic_ball(labels.shape, placed.centre_voxel, 2.5))
    # Only grey matter allowed: the whole ball stays in grey matter.
    result, placed = place_lesion(labels, SPACING, LesionRequest(radius_mm=1.5, location="random", seed=1,
                                                                 within=("grey_matter",)))
    assert (labels[result == LESION] == GREY).all() and labels[placed.centre_voxel] == GREY


def test_a_seed_draws_the_same_centre_and_another_seed_another():
    labels = phantom()
    first = place_lesion(labels, SPACING, LesionRequest(radius_mm=2.0, seed=7))
    again = place_lesion(labels, SPACING, LesionRequest(radius_mm=2.0, seed=7))
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    centres = {place_lesion(labels, SPACING, LesionRequest(radius_mm=2.0, seed=s))[1].centre_voxel
               for s in range(6)}
    assert len(centres) > 1


def test_a_lesion_in_a_real_template_label_map_lands_in_parenchyma():
    from synthmed.imaging.cohort import load_template

    template = load_template(3.0)
    result, placed = place_lesion(template.tissue, 3.0, LesionRequest(volume_ml=1.0, location="random", seed=0),
                                  affine=template.affine)
    assert np.isin(template.tissue[result == LESION], (GREY, WHITE)).all()
    assert abs(placed.volume_ml - 1.0) < 0.3  # 27 uL voxels: the closest whole-shell ball
    assert np.allclose(placed.centre_mm, template.affine[:3, :3] @ placed.centre_voxel + template.affine[:3, 3])


@pytest.mark.parametrize(("request_kwargs", "message"), [
    ({"radius_mm": 2.0, "location": (30, 0, 0)}, r"centre voxel \(30, 0, 0\) is outside the volume of shape "
                                                 r"\(30, 28, 16\)"),
    ({"radius_mm": 2.0, "location": (-1, 5, 5)}, r"centre voxel \(-1, 5, 5\) is outside"),
    ({"radius_mm": 3.0, "location": (1, 14, 8)}, r"at voxel \(1, 14, 8\) reaches outside the volume"),
    ({"radius_mm": 3.0, "location": (3, 14, 8)}, r"voxels outside \['grey_matter', 'white_matter'\]; the largest "
                                                 r"lesion there has a radius just under 2 mm"),
    ({"radius_mm": 12.5, "location": "white_matter", "seed": 0},
     r"No room for a lesion of radius 12.5 mm centred in white_matter.*just under 12 mm"),
    ({"radius_mm": 20.0, "seed": 0}, r"radius 20 mm is too large for a volume of \[30\.0, 35\.0, 32\.0\] mm"),
    ({"volume_ml": 0.0001, "location": (15, 14, 8)}, r"volume_ml 0\.0001 is smaller than half a voxel"),
    ({"radius_mm": 2.0, "location": "ventricle", "seed": 0}, r"Unknown tissue name\(s\) \['ventricle'\]"),
    ({"radius_mm": 2.0, "seed": 0, "within": ("cortex",)}, r"Unknown tissue name\(s\) \['cortex'\]"),
])
def test_requests_that_cannot_be_met_name_the_value_and_what_fits(request_kwargs, message):
    with pytest.raises(ValueError, match=message):
        place_lesion(phantom(), SPACING, LesionRequest(**request_kwargs))


@pytest.mark.parametrize(("request_kwargs", "message"), [
    ({}, "exactly one of radius_mm and volume_ml, got neither"),
    ({"radius_mm": 2.0, "volume_ml": 1.0}, "exactly one of radius_mm and volume_ml"),
    ({"radius_mm": -1.0}, r"radius_mm must be a positive number, got -1\.0"),
    ({"volume_ml": float("nan")}, "volume_ml must be a positive number"),
    ({"radius_mm": 2.0}, "'random' draws the centre: give a seed"),
    ({"radius_mm": 2.0, "location": (1, 2)}, r"expected 3 integer voxel indices"),
    ({"radius_mm": 2.0, "location": (1.5, 2, 3)}, r"expected 3 integer voxel indices"),
])
def test_malformed_requests_are_refused(request_kwargs, message):
    with pytest.raises(ValueError, match=message):
        LesionRequest(**request_kwargs)


def test_radius_for_volume_never_puts_a_voxel_centre_on_the_surface():
    spacing = np.array(SPACING)
    radius = radius_for_volume(0.2, spacing)
    distances = np.sqrt(((ball_offsets(radius + 3, spacing) * spacing) ** 2).sum(axis=1))
    assert np.abs(distances - radius).min() > 1e-3


def test_a_plan_row_s_lesion_block_parses_into_a_request():
    from synthmed.core.config import from_params

    request = from_params(LesionRequest, {"volume_ml": 2, "location": [15, 14, 8], "within": ["white_matter"]},
                          "plan[0].lesion")
    assert request == LesionRequest(volume_ml=2.0, location=(15, 14, 8), within=("white_matter",))
    with pytest.raises(ValueError, match="'sed' -> did you mean 'seed'"):
        from_params(LesionRequest, {"radius_mm": 3, "location": "random", "sed": 1}, "plan[0].lesion")
    placed = place_lesion(phantom(), SPACING, request)[1]
    row = placed.row()
    assert row["requested_volume_ml"] == 2.0 and row["requested_location"] == "15 14 8"
    assert row["realised_voxels"] == placed.voxels and row["within"] == "white_matter"
