"""A head with a face, from the sample brain (nilearn's MNI152 T1, skull-stripped, at 2 mm).

The template has no face, so a scalp shell (after an 8 mm dark "skull" gap) and a face
blob in front of and below the frontal lobe are added. Arrays are RAS+ ``(X, Y, Z)``.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

SPACING = (2.0, 2.0, 2.0)
SCALP, FACE = 0.8, 0.7  # intensities (the template's brain is in [0, 1])


@functools.cache
def synthetic_head() -> dict[str, np.ndarray]:
    """``t1`` (the padded template), ``brain`` (its mask), ``volume`` (with scalp and face),
    ``face`` (the face a viewer would render: in front of the brain, below the frontal lobe),
    ``top_scalp`` (scalp over the vertex, which defacing must keep)."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1).get_fdata(dtype=np.float32)[::2, ::2, ::2]
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata()[::2, ::2, ::2] > 0
    pad = ((0, 0), (0, 30), (40, 0))  # room in front of and below the brain for a face
    t1, brain = np.pad(t1, pad), np.pad(brain, pad)
    distance = ndimage.distance_transform_edt(~brain, sampling=SPACING)
    volume = t1.copy()
    scalp = (distance > 8) & (distance <= 13)
    volume[scalp] = SCALP
    x, y, z = np.indices(volume.shape)
    front = int(np.nonzero(brain.any(axis=(0, 2)))[0].max())
    frontal_bottom = int(np.nonzero(brain[:, front - 10:, :].any(axis=(0, 1)))[0].min())
    blob = (((x - volume.shape[0] / 2) / 35) ** 2 + ((y - front + 2) / 14) ** 2
            + ((z - frontal_bottom + 22) / 25) ** 2 <= 1) & (distance > 3)
    volume[blob] = FACE
    face = blob & (y > front) & (z < frontal_bottom)
    top_scalp = scalp & (z > np.nonzero(brain.any(axis=(0, 1)))[0].max() - 5)
    return {"t1": t1, "brain": brain, "volume": volume, "face": face, "top_scalp": top_scalp}
