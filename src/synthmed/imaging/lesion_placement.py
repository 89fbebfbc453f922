"""Placing a lesion of a requested size at a requested location into a label map.

A sampling plan row asks for a lesion (issue 11 item 3): a size, as a radius in mm or a
volume in mL, and a location, as voxel coordinates, a named tissue of the label map (the
centre drawn inside it) or ``"random"`` (the centre drawn anywhere the lesion fits). The
lesion is a ball on the voxel grid, the voxels whose centres lie within the radius of the
centre voxel in mm (anisotropic spacing allowed), so what is asked is what the label map
gets:

- a radius request writes exactly that ball, centred exactly on the centre voxel;
- a volume request writes the ball (whole shells of equidistant voxels, so the centre stays
  exact) whose volume is closest to the request; the realised volume is reported beside the
  requested one (they differ by at most half a shell of voxels).

The lesion must lie inside the volume and inside the tissues it may occupy (``within``,
grey and white matter by default); a request that cannot be met raises ``ValueError``
naming the value and what would fit, instead of clipping the lesion silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.imaging.cohort_config import EDEMA, LABEL_NAMES, LESION

# On first use: the parameter check imports this module for LesionPlanRow.
ndimage = lazy_import("scipy.ndimage")

RANDOM = "random"
PARENCHYMA = ("grey_matter", "white_matter")


@dataclass(frozen=True)
class LesionRequest:
    """One lesion asked for: a size (exactly one of ``radius_mm`` and ``volume_ml``) and a location.

    Args:
        radius_mm: radius of the ball in mm.
        volume_ml: volume in mL (1 mL = 1000 mm^3).
        location: ``(i, j, k)`` voxel of the centre, a tissue name of the label map (centre drawn
            inside that tissue) or ``"random"`` (centre drawn wherever the lesion fits).
        seed: draws the centre for a tissue or random location (required for those).
        within: tissue names the lesion may occupy, every voxel of it.
    """

    radius_mm: float | None = None
    volume_ml: float | None = None
    location: tuple[int, int, int] | str = RANDOM
    seed: int | None = None
    within: tuple[str, ...] = PARENCHYMA

    def __post_init__(self) -> None:
        sizes = {"radius_mm": self.radius_mm, "volume_ml": self.volume_ml}
        given = {k: v for k, v in sizes.items() if v is not None}
        if len(given) != 1:
            raise ValueError("A lesion request needs exactly one of radius_mm and volume_ml, "
                             f"got {given or 'neither'}.")
        (name, value), = given.items()
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"Lesion {name} must be a positive number, got {value!r}.")
        if not isinstance(self.location, str):
            voxel = tuple(self.location)
            if len(voxel) != 3 or not all(isinstance(v, (int, np.integer)) for v in voxel):
                raise ValueError(f"Lesion location {self.location!r}: expected 3 integer voxel indices (i, j, k), "
                                 f"a tissue name or {RANDOM!r}.")
            object.__setattr__(self, "location", tuple(int(v) for v in voxel))
        elif self.seed is None:
            raise ValueError(f"Lesion location {self.location!r} draws the centre: give a seed (requests are "
                             "reproducible), or give voxel coordinates.")
        if not self.within:
            raise ValueError("Lesion request: `within` must name at least one tissue the lesion may occupy.")

    def row(self) -> dict[str, Any]:
        """The request as provenance columns (``requested_*``)."""
        location = self.location if isinstance(self.location, str) else " ".join(str(v) for v in self.location)
        return {"requested_radius_mm": self.radius_mm, "requested_volume_ml": self.volume_ml,
                "requested_location": location, "requested_seed": self.seed, "within": ";".join(self.within)}


@dataclass(frozen=True)
class PlacedLesion:
    """A lesion as written into the label map, beside its request."""

    request: LesionRequest
    radius_mm: float                                # radius of the ball written
    centre_voxel: tuple[int, int, int]
    centroid_voxel: tuple[float, float, float]      # mean of the lesion's voxels (equals the centre for a ball)
    centre_mm: tuple[float, float, float]           # the centre voxel through the affine (RAS mm)
    voxels: int
    volume_ml: float

    def row(self) -> dict[str, Any]:
        """Requested and realised lesion as one provenance row."""
        return {**self.request.row(), "realised_radius_mm": round(self.radius_mm, 4),
                "realised_volume_ml": round(self.volume_ml, 6), "realised_voxels": self.voxels,
                "realised_centre_voxel": " ".join(str(v) for v in self.centre_voxel),
                "realised_centroid_voxel": " ".join(f"{v:.3f}" for v in self.centroid_voxel),
                "realised_centre_mm": " ".join(f"{v:.3f}" for v in self.centre_mm)}


def _spacing(spacing_mm: float | Sequence[float]) -> np.ndarray:
    values = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"Voxel spacing must be 3 positive mm values (or one), got {spacing_mm!r}.")
    return values


def ball_offsets(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Integer offsets ``(K, 3)`` of the voxels whose centres lie within ``radius_mm`` of the centre voxel."""
    half = np.floor(radius_mm / spacing + 1e-9).astype(int)
    grid = np.stack(np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij"), axis=-1).reshape(-1, 3)
    return grid[((grid * spacing) ** 2).sum(axis=1) <= radius_mm**2]


def radius_for_volume(volume_ml: float, spacing: np.ndarray) -> float:
    """Radius (mm) of the grid ball whose volume is closest to ``volume_ml`` (smaller on a tie).

    The radius returned lies halfway between the distances of the last shell included and
    the next one, so no voxel centre sits on the ball's surface (no rounding decides).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    if volume_ml < voxel_ml / 2:
        raise ValueError(f"Lesion volume_ml {volume_ml} is smaller than half a voxel ({voxel_ml:g} mL at spacing "
                         f"{spacing.tolist()} mm); ask for at least {voxel_ml:g} mL.")
    # Every shell up to beyond the ideal radius: the closest ball lies below 1.5 x that radius.
    reach = 1.5 * (3 * volume_ml * 1000 / (4 * math.pi)) ** (1 / 3) + float(spacing.max())
    distances = np.sqrt(((ball_offsets(reach, spacing) * spacing) ** 2).sum(axis=1))
    shells, counts = np.unique(np.round(distances, 9), return_counts=True)
    volumes = np.cumsum(counts) * voxel_ml
    best = int(np.argmin(np.abs(volumes - volume_ml)))
    upper = shells[best + 1] if best + 1 < len(shells) else shells[best] + float(spacing.min())
    return float((shells[best] + upper) / 2)


def _label_values(names: Sequence[str], label_names: Mapping[int, str]) -> list[int]:
    by_name = {name: value for value, name in label_names.items()}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"Unknown tissue name(s) {unknown}; the label map's names are {sorted(by_name)}.")
    return [by_name[name] for name in names]


def _room(allowed: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel to the nearest voxel the lesion may not occupy, outside the volume included."""
    padded = np.pad(allowed, 1, constant_values=False)  # the volume's outside is not allowed
    return ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]


def place_lesion(label_map: np.ndarray, spacing_mm: float | Sequence[float], request: LesionRequest, *,
                 affine: np.ndarray | None = None, lesion_label: int = LESION,
                 label_names: Mapping[int, str] = LABEL_NAMES) -> tuple[np.ndarray, PlacedLesion]:
    """Write the requested lesion into a copy of ``label_map``.

    Args:
        label_map: ``(X, Y, Z)`` integer tissue labels (a held-out patient's), not modified.
        spacing_mm: voxel size in mm, one value or one per axis.
        request: size and location (`LesionRequest`).
        affine: voxel -> RAS mm for ``centre_mm``; default: the voxel index times the spacing.
        lesion_label: the value written under the lesion.
        label_names: label value -> tissue name (the cohort's by default).

    Returns:
        ``(new_label_map, placed)``: the label map with ``lesion_label`` on the lesion's
        voxels (same dtype), and the realised lesion beside its request.

    Raises:
        ValueError: a centre outside the volume, a lesion that leaves the volume or the
            allowed tissue, no room for it anywhere in the named tissue, a size larger than
            the volume or smaller than a voxel, an unknown tissue name; each message names the
            value and what would fit.
    """
    labels = np.asarray(label_map)
    if labels.ndim != 3 or labels.dtype.kind not in "iu":
        raise ValueError(f"place_lesion needs an integer (X, Y, Z) label map, got {labels.dtype} {labels.shape}.")
    spacing = _spacing(spacing_mm)
    shape = np.array(labels.shape)
    if request.radius_mm is not None:
        radius = float(request.radius_mm)
        size = f"radius {radius:g} mm"
    else:
        radius = radius_for_volume(float(request.volume_ml), spacing)
        size = f"volume {request.volume_ml:g} mL (a ball of radius {radius:.3g} mm)"
    extent = shape * spacing
    if 2 * radius >= float(extent.min()):
        raise ValueError(f"A lesion of {size} is too large for a volume of {extent.round(1).tolist()} mm "
                         f"(shape {labels.shape}, spacing {spacing.tolist()} mm): its diameter must stay below "
                         f"{extent.min():g} mm.")
    within = _label_values(request.within, label_names)
    allowed = np.isin(labels, within)
    room = _room(allowed, spacing)  # a ball fits at v exactly when room[v] > radius
    offsets = ball_offsets(radius, spacing)
    if isinstance(request.location, str):
        if request.location == RANDOM:
            where, scope = f"inside {'/'.join(request.within)}", allowed
        else:
            tissue = labels == _label_values([request.location], label_names)[0]
            if not tissue.any():
                raise ValueError(f"Lesion location {request.location!r}: the label map has no voxel of that tissue.")
            where, scope = f"centred in {request.location}", tissue
        found = np.argwhere(scope & (room > radius))
        if not len(found):
            largest = float(room[scope].max()) if scope.any() else 0.0
            raise ValueError(f"No room for a lesion of {size} {where}: no voxel there lies more than {radius:.3g} mm "
                             f"from the volume's edge and from tissue outside {list(request.within)}; the largest "
                             f"lesion that fits there has a radius just under {largest:.3g} mm.")
        rng = np.random.default_rng(request.seed)
        centre = found[int(rng.integers(len(found)))]
    else:
        centre = np.array(request.location)
        if np.any(centre < 0) or np.any(centre >= shape):
            raise ValueError(f"Lesion centre voxel {tuple(centre.tolist())} is outside the volume of shape "
                             f"{labels.shape}: each index must be in [0, size).")
        voxels = centre + offsets
        inside = np.all((voxels >= 0) & (voxels < shape), axis=1)
        if not inside.all():
            raise ValueError(f"A lesion of {size} at voxel {tuple(centre.tolist())} reaches outside the volume of "
                             f"shape {labels.shape} ({int((~inside).sum())} of its {len(voxels)} voxels); move "
                             "the centre inwards or ask for a smaller lesion.")
        outside = ~allowed[tuple(voxels.T)]
        if outside.any():
            raise ValueError(f"A lesion of {size} at voxel {tuple(centre.tolist())} covers {int(outside.sum())} of "
                             f"its {len(voxels)} voxels outside {list(request.within)}; the largest lesion there has "
                             f"a radius just under {room[tuple(centre)]:.3g} mm.")
    voxels = centre + offsets
    result = labels.copy()
    result[tuple(voxels.T)] = lesion_label
    centre_tuple = tuple(int(v) for v in centre)
    centre_mm = (affine[:3, :3] @ centre + affine[:3, 3]) if affine is not None else centre * spacing
    placed = PlacedLesion(
        request=request, radius_mm=radius, centre_voxel=centre_tuple,
        centroid_voxel=tuple(float(v) for v in voxels.mean(axis=0)),
        centre_mm=tuple(float(v) for v in centre_mm), voxels=len(voxels),
        volume_ml=len(voxels) * float(np.prod(spacing)) / 1000.0)
    return result, placed


@dataclass(frozen=True)
class LesionPlanRow:
    """One row of a lesion-control plan: ``count`` label maps, each given the lesion of `LesionRequest`.

    ``location`` is ``[i, j, k]``, a tissue name or ``"random"``; the seed of each drawn centre
    comes from the plan's seed, the row and the copy (`place_plan`).
    """

    count: int = 1
    radius_mm: float | None = None
    volume_ml: float | None = None
    location: Any = RANDOM
    within: tuple[str, ...] = PARENCHYMA

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"A lesion plan row's count must be a positive integer, got {self.count!r}.")
        self.request(0)  # the size, location and tissues are checked once, here

    def request(self, seed: int) -> LesionRequest:
        location = self.location if isinstance(self.location, str) else tuple(self.location)
        return LesionRequest(radius_mm=self.radius_mm, volume_ml=self.volume_ml, location=location,
                             seed=seed, within=tuple(self.within))


def place_plan(label_maps: np.ndarray, spacing_mm: float | Sequence[float], rows: Sequence[LesionPlanRow], *,
               seed: int, clear_label: int, lesion_label: int = LESION, edema_label: int | None = EDEMA,
               label_names: Mapping[int, str] = LABEL_NAMES) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Write each plan row's lesions into held-out label maps, taken in turn.

    Each placement takes the next label map (cycling through ``label_maps``), replaces the lesions
    it already holds, and their edema, by ``clear_label`` (so the lesion asked for is the only one)
    and places the request with seed ``seed + 1000 * row + copy``. The placed lesion gets no edema
    label: the request is for a lesion of a size and place, and the map says exactly that.

    Args:
        label_maps: ``(N, 1, D, H, W)`` or ``(N, D, H, W)`` integer label maps (held-out patients').
        spacing_mm: their voxel size.
        rows: the plan.
        clear_label: the tissue written over existing lesions and their edema (white matter in the cohort).
        lesion_label: the label value of a lesion (cleared, then written under the placed lesion).
        edema_label: the label value of perilesional edema, cleared with the lesions; None: the
            maps have no such label.

    Returns:
        ``(maps (M, 1, D, H, W), rows)``: one label map and one provenance row per placement,
        ``source`` (the label map's row), the request (``requested_*``) and the lesion written
        (``placed_voxels``, ``placed_volume_ml``, ``placed_radius_mm``, ``placed_centre_{d,h,w}``:
        the centre voxel, also the lesion's centroid).
    """
    maps = np.asarray(label_maps)
    if maps.ndim == 5 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 4 or len(maps) == 0:
        raise ValueError(f"place_plan needs (N, 1, D, H, W) label maps with N >= 1, got "
                         f"{np.asarray(label_maps).shape}.")
    out, table = [], []
    cursor = 0
    for r, row in enumerate(rows):
        for copy in range(row.count):
            source = cursor % len(maps)
            cursor += 1
            cleared = [lesion_label] + ([] if edema_label is None else [edema_label])
            base = np.where(np.isin(maps[source], cleared), clear_label, maps[source]).astype(maps.dtype)
            placed_map, placed = place_lesion(base, spacing_mm, row.request(seed + 1000 * r + copy),
                                              lesion_label=lesion_label, label_names=label_names)
            out.append(placed_map[None])
            table.append({"plan_row": r, "copy": copy, "source": source, **placed.request.row(),
                          "placed_radius_mm": round(placed.radius_mm, 4), "placed_voxels": placed.voxels,
                          "placed_volume_ml": round(placed.volume_ml, 6),
                          **{f"placed_centre_{a}": v for a, v in zip("dhw", placed.centre_voxel)}})
    return (np.stack(out) if out else np.zeros((0, 1, *maps.shape[1:]), maps.dtype)), table
