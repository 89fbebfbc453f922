"""Defacing on the sample brain (nilearn's MNI152 T1, as the sample_data pipeline builds it).

The template is skull-stripped, so it has no face: the tests give it a scalp and a face
(``tests.head_phantom``) at 2 mm, and check that the face is zero and the brain untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synthmed.privacy.deface import DefaceSettings, FacePlane, apply_deface, plan_deface
from tests.head_phantom import SPACING, synthetic_head


@pytest.fixture(scope="module")
def head():
    return synthetic_head()


def test_defacing_removes_the_face_and_leaves_every_brain_voxel_exactly(head):
    plan = plan_deface(head["volume"], SPACING, "MR")
    assert plan.failure is None and 1000 < plan.brain_ml < 2200
    out = apply_deface(head["volume"], plan.plane)
    assert head["face"].sum() > 10_000
    assert (out[head["face"]] == 0).all()
    assert np.array_equal(out[head["brain"]], head["volume"][head["brain"]])
    assert (out[head["top_scalp"]] == 0.8).all()  # the cut is the face, not the whole head
    assert 0.05 < plan.removed_fraction < 0.3


def test_the_skull_stripped_sample_has_no_face_and_is_unchanged(head):
    plan = plan_deface(head["t1"], SPACING, "MR")
    assert plan.failure is None and plan.removed_fraction == 0.0
    assert np.array_equal(apply_deface(head["t1"], plan.plane), head["t1"])


def test_ct_head_in_hounsfield_units(head):
    ct = np.full(head["volume"].shape, -1000.0, dtype=np.float32)
    distance = ndimage.distance_transform_edt(~head["brain"], sampling=SPACING)
    ct[(distance > 0) & (distance <= 8)] = 1200.0  # skull
    ct[head["volume"] == 0.8] = 30.0  # scalp
    ct[head["volume"] == 0.7] = 40.0  # face soft tissue
    ct[head["brain"]] = 35.0
    plan = plan_deface(ct, SPACING, "CT")
    assert plan.failure is None
    out = apply_deface(ct[None], plan.plane)[0]  # channels-first, as the arrays downstream
    assert (out[head["face"]] == -1000.0).all()
    assert np.array_equal(out[head["brain"]], ct[head["brain"]])


def test_a_volume_without_a_brain_sized_piece_fails_instead_of_passing():
    small = np.zeros((40, 40, 40), dtype=np.float32)
    small[15:25, 15:25, 15:25] = 1.0
    plan = plan_deface(small, SPACING, "MR")
    assert plan.plane is None and "outside" in plan.failure


def test_plane_text_round_trip_and_settings_checks():
    plane = FacePlane(1.5, -0.25, 100.0)
    assert FacePlane.parse(plane.as_text()) == plane
    with pytest.raises(ValueError, match="three numbers"):
        FacePlane.parse("1 2")
    with pytest.raises(ValueError, match="brain_ml"):
        DefaceSettings(brain_ml=(2000.0, 1000.0))
    with pytest.raises(ValueError, match="3D head volume"):
        plan_deface(np.zeros((4, 4)), SPACING, "MR")
