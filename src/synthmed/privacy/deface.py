"""Defacing of head MR and CT volumes (PS3.15 E.3.x, Clean Recognizable Visual Features).

A face can be rebuilt from a head volume by rendering its skin surface; removing the voxels
in front of and below the brain makes it unrecognisable while keeping the brain intact.

Method (a shear plane as in Quickshear, Schimke & Hale 2011, with the brain estimated from
the volume itself, because user volumes come without a brain mask):

1. The volume must be in closest-canonical RAS+ voxel order (x towards the patient's right,
   y towards the front, z towards the head), which is how ``synthmed.imaging.readers``
   decodes every NIfTI and DICOM volume.
2. Brain estimate, on a copy subsampled to about ``plan_mm`` per voxel: voxels in the
   brain's intensity range (MR: above Otsu's threshold of the whole volume, which separates
   air and dark bone from tissue; CT: ``ct_brain_hu`` in Hounsfield units, which excludes
   bone and air), eroded by ``erode_mm`` so that the brain comes apart from the scalp, eyes
   and neck at the thin bridges through the skull, the largest connected piece, grown back
   by ``erode_mm`` inside the intensity range.
3. The brain's silhouette in the sagittal plane (its projection along x) and its convex hull;
   the hull edge leaving the most anterior point towards the feet is the line under the
   frontal lobe and in front of the temporal lobe. The plane through that line, moved
   ``buffer_mm`` away from the brain, separates brain from face (eyes, nose, mouth, chin).
4. Every voxel beyond the plane, in every sagittal slice, is set to the volume's minimum
   (air). By construction no voxel of the estimated brain is touched; the buffer covers
   the subsampling and the parts of the real brain the estimate missed.

Checks that make the method fail (the caller keeps the item quarantined) rather than pass
silently: the brain estimate's volume must lie in ``brain_ml`` (a whole head merged with
its brain, or a piece of neck, falls outside), and the hull edge must face forwards and
downwards.

Limits (to be reviewed by a person for a release): a volume whose orientation in its header
is wrong is cut in the wrong place; heavily tilted heads (pitch over about 30 degrees),
infants, and volumes cropped through the brain may fail or cut too little; ears and the
back of the head are kept (they are not the face); the plane keeps the forehead. A
skull-stripped volume (such as the MNI152 sample) has no face: nothing beyond the plane
is non-zero and nothing changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from synthmed.core.lazy import lazy_import

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
ndimage = lazy_import("scipy.ndimage")
spatial = lazy_import("scipy.spatial")
filters = lazy_import("skimage.filters")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefaceSettings:
    """How the face plane is found (see the module docstring).

    Args:
        buffer_mm: distance between the brain estimate's hull and the cut plane.
        erode_mm: erosion that separates the brain from the scalp and face.
        plan_mm: voxel size of the subsampled copy the plane is planned on.
        brain_ml: accepted volume range of the brain estimate, in millilitres.
        ct_brain_hu: CT values of brain tissue (bone and air are outside).
    """

    buffer_mm: float = 10.0
    erode_mm: float = 4.0
    plan_mm: float = 2.0
    brain_ml: tuple[float, float] = (600.0, 2600.0)
    ct_brain_hu: tuple[float, float] = (-20.0, 120.0)

    def __post_init__(self) -> None:
        for name in ("buffer_mm", "erode_mm", "plan_mm"):
            if not float(getattr(self, name)) >= 0 or (name == "plan_mm" and not self.plan_mm > 0):
                raise ValueError(f"preprocessing.pixels.deface.{name} must be a non-negative number of mm, "
                                 f"got {getattr(self, name)!r}.")
        for name in ("brain_ml", "ct_brain_hu"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"preprocessing.pixels.deface.{name} must be an increasing [low, high] pair, "
                                 f"got {getattr(self, name)!r}.")


@dataclass(frozen=True)
class FacePlane:
    """The face side of a volume: voxels ``(i, j, k)`` with ``a * j + b * k > c``.

    ``j`` and ``k`` are voxel indices along y (anterior) and z (superior) of the RAS+ grid
    the plane was planned on; the plane does not depend on ``i`` (left-right).
    """

    a: float
    b: float
    c: float

    def as_text(self) -> str:
        """``"a b c"``, the form stored in tables."""
        return f"{self.a:.9g} {self.b:.9g} {self.c:.9g}"

    @classmethod
    def parse(cls, text: str) -> FacePlane:
        try:
            a, b, c = (float(v) for v in str(text).split())
        except ValueError as exc:
            raise ValueError(f"Expected a face plane as three numbers 'a b c', got {text!r}.") from exc
        return cls(a, b, c)

    def mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """Boolean ``(X, Y, Z)`` mask of the face side."""
        j = np.arange(shape[1], dtype=np.float64)[:, None]
        k = np.arange(shape[2], dtype=np.float64)[None, :]
        side = self.a * j + self.b * k > self.c
        return np.broadcast_to(side[None], tuple(shape))


@dataclass(frozen=True)
class DefacePlan:
    """What `plan_deface` found: the plane, or why there is none, and what it removes."""

    plane: FacePlane | None
    failure: str | None
    brain_ml: float
    removed_fraction: float  # of the voxels above the volume's minimum


def _brain_estimate(volume: np.ndarray, spacing: tuple[float, float, float], modality: str,
                    settings: DefaceSettings) -> np.ndarray:
    if modality.upper() == "CT":
        low, high = settings.ct_brain_hu
        tissue = (volume > low) & (volume < high)
    else:
        finite = volume[np.isfinite(volume)]
        tissue = volume > (filters.threshold_otsu(finite) if finite.size and finite.min() < finite.max() else np.inf)
    if not tissue.any():
        return tissue
    inside = ndimage.distance_transform_edt(tissue, sampling=spacing) > settings.erode_mm
    labels, n = ndimage.label(inside)
    if n == 0:
        return inside
    sizes = np.bincount(labels.ravel())[1:]
    core = labels == (int(np.argmax(sizes)) + 1)
    grown = ndimage.distance_transform_edt(~core, sampling=spacing) <= settings.erode_mm + 1e-6
    return grown & tissue


def _anterior_inferior_edge(points: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Outward unit normal ``(ny, nz)`` and offset of the hull edge below the most anterior point."""
    hull = spatial.ConvexHull(points)
    vertices = points[hull.vertices]  # counter-clockwise in the (y, z) plane
    front = max(range(len(vertices)), key=lambda i: (vertices[i, 0], -vertices[i, 1]))
    previous = vertices[front - 1]  # clockwise from the front point: downwards
    dy, dz = vertices[front] - previous
    normal = np.array([dz, -dy], dtype=np.float64)  # outward for a counter-clockwise polygon
    norm = float(np.hypot(*normal))
    if norm == 0 or not (normal[0] > 0 and normal[1] < 0):
        return None
    normal /= norm
    return normal, float((points @ normal).max())


def plan_deface(volume: np.ndarray, spacing: tuple[float, float, float], modality: str,
                settings: DefaceSettings = DefaceSettings()) -> DefacePlan:
    """Find the face plane of one RAS+ head volume ``(X, Y, Z)`` with voxel sizes ``spacing`` (mm)."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"Expected a 3D head volume (X, Y, Z), got an array of shape {volume.shape}.")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise ValueError(f"Expected three positive voxel sizes in mm, got {spacing}.")
    step = tuple(max(1, int(round(settings.plan_mm / s))) for s in spacing)
    coarse = np.asarray(volume[::step[0], ::step[1], ::step[2]], dtype=np.float32)
    coarse_spacing = tuple(s * f for s, f in zip(spacing, step))
    brain = _brain_estimate(coarse, coarse_spacing, modality, settings)
    brain_ml = float(brain.sum()) * float(np.prod(coarse_spacing)) / 1000.0
    low, high = settings.brain_ml
    if not low <= brain_ml <= high:
        return DefacePlan(None, f"brain estimate of {brain_ml:.0f} ml is outside [{low:g}, {high:g}] ml", brain_ml, 0.0)
    silhouette = brain.any(axis=0)
    j, k = np.nonzero(silhouette)
    # The four corners of each silhouette voxel (its centre +- half a voxel), in mm from
    # voxel (0, 0, 0), so the hull encloses the voxels themselves, not only their centres.
    half_y, half_z = coarse_spacing[1] / 2, coarse_spacing[2] / 2
    corners = [(dy, dz) for dy in (-half_y, half_y) for dz in (-half_z, half_z)]
    ys = np.concatenate([j * coarse_spacing[1] + dy for dy, _ in corners])
    zs = np.concatenate([k * coarse_spacing[2] + dz for _, dz in corners])
    edge = _anterior_inferior_edge(np.column_stack([ys, zs]))
    if edge is None:
        return DefacePlan(None, "the brain estimate has no edge facing forwards and downwards", brain_ml, 0.0)
    (ny, nz), offset = edge
    # n . (j * sy, k * sz) > offset + buffer, in full-resolution voxel indices.
    plane = FacePlane(a=ny * spacing[1], b=nz * spacing[2], c=offset + settings.buffer_mm)
    above = volume > np.nanmin(volume)
    removed = float((above & plane.mask(volume.shape)).sum()) / max(int(above.sum()), 1)
    return DefacePlan(plane, None, brain_ml, removed)


def apply_deface(volume: np.ndarray, plane: FacePlane) -> np.ndarray:
    """A copy of ``volume`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``) with the face side set to its minimum."""
    out = np.array(volume, copy=True)
    spatial = out.shape[-3:]
    face = plane.mask(spatial)
    if out.ndim == 3:
        out[face] = np.nanmin(out)
    else:
        for channel in out.reshape((-1, *spatial)):
            channel[face] = np.nanmin(channel)
    return out
