"""Train / validation / test splits that never leak a patient or a neighbouring slice.

Two strategies:

- ``group``: whole patients (the manifest's ``patient_key``) go to one split. The right
  choice for a dataset of many patients.
- ``slab``: each item is cut along one spatial axis into contiguous slabs (train, then
  validation, then test) separated by ``gap_px`` voxels, so that no slice or patch of one
  split is a neighbour of one of another. For a single-subject dataset such as the bundled
  sample; note that it keeps a patient in several splits. With ``slab_axis: all`` a volume
  gets one set of slabs per axis and each plane's slices use the slabs along their own
  axis, so slices stay whole; the price is that a slice of one plane and a slice of another
  plane always cross in one line of voxels, which no split of a single volume can avoid
  for whole slices of several planes (use one axis for strict separation).
- ``auto``: ``group`` when every split can receive ``min_groups_per_split`` patients,
  otherwise ``slab``; the choice is logged.

``stratify: finding`` makes the group split stratified: patients with a finding (a lesion
label in one of their items' masks) and patients without are each shared out over the
splits in proportion, so that a rare finding does not land in one split by chance. The
finding is read from what preprocessing has (the masks), never from an answer key.

``check_no_leakage`` verifies a split table and is called after every assignment and again
at the extraction boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.core.manifest import spatial_shape

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
STRATEGIES = ("group", "slab", "auto")
STRATIFY = ("none", "finding")
# Strata of a stratified group split: a patient whose items have no mask at all cannot be
# called normal, so it is a stratum of its own (spread like the others).
FINDING, NO_FINDING, NO_MASK = "finding", "no finding", "no mask"
SPLIT_COLUMNS = ["item_id", "patient_key", "split", "strategy", "axis", "start", "stop", "gap_px"]


class SplitLeakageError(RuntimeError):
    """A patient, or a region of an item, appears in two splits."""


@dataclass(frozen=True)
class SplitConfig:
    """``params:preprocessing.split``."""

    strategy: str = "auto"
    fractions: Mapping[str, float] = field(
        default_factory=lambda: {"train": 0.7, "validation": 0.15, "test": 0.15}
    )
    seed: int = 0
    slab_axis: Mapping[str, int | str] = field(default_factory=lambda: {"volume": 2, "image2d": 0})
    gap_px: int = 8
    min_groups_per_split: int = 2
    stratify: str = "none"
    lesion_labels: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if self.stratify not in STRATIFY:
            raise ValueError(f"split.stratify must be one of {list(STRATIFY)}, got {self.stratify!r}.")
        if not self.lesion_labels or any(int(v) <= 0 for v in self.lesion_labels):
            raise ValueError(
                f"split.lesion_labels must list mask values > 0 (0 is background), got {list(self.lesion_labels)}."
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"split.strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}.")
        if set(self.fractions) != set(SPLITS):
            raise ValueError(f"split.fractions needs exactly the keys {list(SPLITS)}, got {sorted(self.fractions)}.")
        values = [float(self.fractions[s]) for s in SPLITS]
        if any(v < 0 for v in values) or not np.isclose(sum(values), 1.0) or values[0] <= 0:
            raise ValueError(f"split.fractions must be >= 0, sum to 1 and give train > 0; got {dict(self.fractions)}.")
        if self.gap_px < 0:
            raise ValueError(f"split.gap_px must be >= 0, got {self.gap_px}.")
        for kind, axis in self.slab_axis.items():
            limit = {"volume": 3, "image2d": 2}.get(kind)
            valid = axis == "all" or (isinstance(axis, int) and limit is not None and 0 <= axis < limit)
            if limit is None or not valid:
                raise ValueError(
                    f"split.slab_axis.{kind}={axis!r} is invalid: expected kinds 'volume' (axis 0-2 "
                    "or 'all') and 'image2d' (axis 0-1 or 'all')."
                )


def split_config(params: Mapping[str, Any]) -> SplitConfig:
    return from_params(SplitConfig, params, "preprocessing.split")


def _allocate(n: int, fractions: Mapping[str, float]) -> list[int]:
    """Split ``n`` units by ``fractions`` with the largest-remainder method."""
    exact = [n * float(fractions[s]) for s in SPLITS]
    counts = [int(np.floor(x)) for x in exact]
    for i in np.argsort([c - x for c, x in zip(counts, exact)])[: n - sum(counts)]:
        counts[int(i)] += 1
    return counts


def _allocate_each(n: int, fractions: Mapping[str, float]) -> list[int]:
    """``_allocate``, then one unit moved to every split with a fraction > 0 that got none,
    taken from the largest split, as long as ``n`` is enough for one each."""
    counts = _allocate(n, fractions)
    wanted = [i for i, s in enumerate(SPLITS) if float(fractions[s]) > 0]
    if n < len(wanted):
        return counts
    for i in wanted:
        if counts[i] == 0:
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[i] += 1
    return counts


def item_has_finding(mask: np.ndarray, lesion_labels: tuple[int, ...]) -> bool:
    """Whether a label mask holds any voxel of ``lesion_labels``."""
    return bool(np.isin(np.asarray(mask), np.asarray(lesion_labels)).any())


def patient_strata(manifest: pd.DataFrame, findings: Mapping[str, bool | None]) -> dict[str, str]:
    """Stratum of every patient: ``finding`` if any of its items has one, else ``no finding``
    if any has a mask, else ``no mask``. ``findings``: item id -> bool, None (no mask)."""
    strata = {}
    for patient, items in manifest.groupby("patient_key")["item_id"]:
        values = [findings.get(item) for item in items]
        strata[patient] = (FINDING if any(v is True for v in values)
                           else NO_FINDING if any(v is False for v in values) else NO_MASK)
    return strata


def assign_group_splits(
    manifest: pd.DataFrame, config: SplitConfig, findings: Mapping[str, bool | None] | None = None
) -> pd.DataFrame:
    """Every item of a patient in the same split; patients shuffled with ``config.seed``.

    With ``config.stratify == "finding"`` (``findings`` required: item id -> whether its mask
    has a lesion label, None for an item without mask), each stratum of ``patient_strata`` is
    shuffled and shared out by ``config.fractions`` on its own, every split with a fraction
    getting at least one patient of a stratum that has enough patients.
    """
    groups = sorted(manifest["patient_key"].unique())
    if config.stratify == "finding":
        if findings is None:
            raise ValueError("split.stratify is 'finding' but no item findings were given (masks are needed).")
        strata = patient_strata(manifest, findings)
    else:
        strata = dict.fromkeys(groups, "all")
    rng = np.random.default_rng(config.seed)
    split_of = {}
    for stratum in sorted(set(strata.values())):
        members = [g for g in groups if strata[g] == stratum]
        order = [members[i] for i in rng.permutation(len(members))]
        counts = _allocate_each(len(order), config.fractions) if config.stratify == "finding" else \
            _allocate(len(order), config.fractions)
        start = 0
        for split, count in zip(SPLITS, counts):
            split_of.update({g: split for g in order[start : start + count]})
            start += count
        if config.stratify == "finding":
            logger.info("Stratified split, %s: %d patients -> %s", stratum, len(order),
                        ", ".join(f"{s} {c}" for s, c in zip(SPLITS, counts)))
    rows = []
    for item in manifest.itertuples():
        spatial = spatial_shape(item.shape)
        rows.append((item.item_id, item.patient_key, split_of[item.patient_key], "group", -1, 0, int(max(spatial)), 0))
    return pd.DataFrame(rows, columns=SPLIT_COLUMNS)


def _extent(item: Any, axis: int, length: int) -> tuple[int, int]:
    """The foreground extent along ``axis`` from ``foreground_bbox`` ("a:b,c:d,..."), else all."""
    bbox = getattr(item, "foreground_bbox", "") or ""
    if not isinstance(bbox, str) or not bbox:
        return 0, length
    low, high = (int(v) for v in bbox.split(",")[axis].split(":"))
    return low, high


def assign_slab_splits(manifest: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """Contiguous train / validation / test slabs of every item, ``gap_px`` apart.

    The slabs share out the item's foreground extent along the axis (the manifest's
    ``foreground_bbox``, when present), so that empty margins do not become a split of
    their own; the first slab starts at 0 and the last ends at the item's edge. An item
    too short for three slabs and two gaps goes to train whole (logged).
    """
    rows = []
    for item in manifest.itertuples():
        shape = spatial_shape(item.shape)
        setting = config.slab_axis.get(item.kind, 0)
        for axis in range(len(shape)) if setting == "all" else [int(setting)]:
            rows.extend(_slabs(item, axis, shape[axis], config))
    return pd.DataFrame(rows, columns=SPLIT_COLUMNS)


def _slabs(item: Any, axis: int, length: int, config: SplitConfig) -> list[tuple]:
    """Split rows of one item along one axis."""
    low, high = _extent(item, axis, length)
    usable = high - low - 2 * config.gap_px
    counts = _allocate(max(usable, 0), config.fractions)
    if usable < len(SPLITS) or min(c for c, s in zip(counts, SPLITS) if config.fractions[s] > 0) == 0:
        logger.warning("Item %s is too short (%d px along axis %d) for slabs: all of it goes to train",
                       item.item_id, length, axis)
        return [(item.item_id, item.patient_key, "train", "slab", axis, 0, length, config.gap_px)]
    bounds = []
    start = low
    for split, count in zip(SPLITS, counts):
        if count:
            bounds.append([split, start, start + count])
            start += count + config.gap_px
    bounds[0][1], bounds[-1][2] = 0, length
    return [(item.item_id, item.patient_key, split, "slab", axis, a, b, config.gap_px) for split, a, b in bounds]


def assign_splits(
    manifest: pd.DataFrame, params: Mapping[str, Any], findings: Mapping[str, bool | None] | None = None
) -> pd.DataFrame:
    """The split table of ``manifest`` (columns ``SPLIT_COLUMNS``), checked for leakage.

    Args:
        manifest: needs ``item_id``, ``patient_key``, ``kind``, ``shape`` (``"CxHxW"`` or
            ``"CxXxYxZ"``).
        params: ``SplitConfig`` keys.
        findings: item id -> whether its mask has a lesion label (None: no mask); needed for
            ``stratify: finding`` (see ``item_has_finding``).
    """
    config = split_config(params)
    strategy = config.strategy
    if strategy == "auto":
        n_groups = manifest["patient_key"].nunique()
        smallest = min(c for c, s in zip(_allocate(n_groups, config.fractions), SPLITS) if config.fractions[s] > 0)
        strategy = "group" if smallest >= config.min_groups_per_split else "slab"
        logger.info("split.strategy auto -> %s (%d patient groups; %d in the smallest split)",
                    strategy, n_groups, smallest)
    if strategy == "group":
        table = assign_group_splits(manifest, config, findings)
    else:
        if config.stratify != "none":
            logger.warning("split.stratify %r applies to group splits only; the slab split ignores it", config.stratify)
        table = assign_slab_splits(manifest, config)
    check_no_leakage(table)
    return table


def check_no_leakage(split_table: pd.DataFrame) -> None:
    """Raise ``SplitLeakageError`` if the table lets information cross splits.

    - ``group`` rows: a patient may appear in one split only.
    - ``slab`` rows: along each axis, slabs of one item in different splits must be at
      least ``gap_px`` apart, and slabs may not overlap.
    """
    problems = []
    unknown = sorted(set(split_table["split"]) - set(SPLITS))
    if unknown:
        problems.append(f"unknown split name(s) {unknown}")
    group_rows = split_table[split_table["strategy"] == "group"]
    spread = group_rows.groupby("patient_key")["split"].nunique()
    for patient in spread[spread > 1].index:
        problems.append(f"patient {patient} is in splits "
                        f"{sorted(set(group_rows[group_rows.patient_key == patient].split))}")
    for (item_id, axis), slabs in split_table[split_table["strategy"] == "slab"].groupby(["item_id", "axis"]):
        ordered = slabs.sort_values("start").to_dict("records")
        for a, b in zip(ordered, ordered[1:]):
            distance = int(b["start"]) - int(a["stop"])
            needed = 0 if a["split"] == b["split"] else int(max(a["gap_px"], b["gap_px"]))
            if distance < needed:
                problems.append(
                    f"item {item_id} axis {axis}: {a['split']} [{a['start']}, {a['stop']}) and {b['split']} "
                    f"[{b['start']}, {b['stop']}) are {distance} px apart, need {needed}"
                )
    mixed = set(group_rows["item_id"]) & set(split_table[split_table["strategy"] == "slab"]["item_id"])
    if mixed:
        problems.append(f"{len(mixed)} item(s) are split both by group and by slab")
    if problems:
        raise SplitLeakageError("Split leakage: " + "; ".join(problems))
