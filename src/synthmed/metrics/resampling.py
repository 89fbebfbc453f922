"""Resampling by patient: the units a bootstrap draws, disjoint halves and folds that never split a patient.

Images of one patient are not independent: the slices of one brain share its anatomy, contrast
and scanner. A bootstrap that draws single images then treats 274 slices of 4 patients as 274
independent observations and its interval is far too narrow; a real-vs-real floor whose two
halves share patients compares a patient with itself and reads lower than a generator of new
patients could reach; a classifier scored on held-out slices of patients it trained on is scored
on near-copies. The cluster bootstrap (Davison & Hinkley 1997, "Bootstrap Methods and their
Application", sec. 3.8) draws whole patients instead, and the halves and folds here keep each
patient on one side.

Every function takes ``groups=None`` for images without patients (each image its own unit) and
then draws exactly what an image-level resampling with the same random generator draws, so
results on sources without patients do not change. Within ``groups`` a missing key (None or NaN)
marks one image without a patient, such as a class-conditional model's sample beside real
slices: it is its own unit, and ``n_groups`` does not count it as a patient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from synthmed.core.lazy import lazy_import

# pandas loads on first use: utility's configuration dataclass imports this module before every run.
pd = lazy_import("pandas")
logger = logging.getLogger(__name__)

Groups = Sequence[object] | np.ndarray | None
# disjoint_halves: each half needs 2 rows (a covariance); fewer by patient, and the halves share patients.
MIN_HALF = 2


def _codes(n: int, groups: Groups, what: str) -> np.ndarray | None:
    """Integer group codes for ``n`` rows, or None without groups.

    The patients get 0..G-1 (sorted by key); a row without a key (None or NaN: a sample of a
    class-conditional model, which has no patient) gets a code of its own after them, so it is
    drawn, halved and folded alone.
    """
    if groups is None:
        return None
    keys = np.asarray(groups, dtype=object)
    if keys.shape != (n,):
        raise ValueError(f"{what}: expected one patient key per image ({n}), got {keys.shape[0] if keys.ndim else 0}.")
    series = pd.Series(keys)
    missing = series.isna().to_numpy()
    codes, uniques = pd.factorize(series, sort=True)  # NA -> -1
    codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    return codes


def bootstrap_units(n: int, groups: Groups, *, what: str = "bootstrap") -> list[np.ndarray]:
    """The units a bootstrap draws: the image indices of each group (patient), or each image alone.

    All images of one patient would make one unit, and every resample the same set: an interval
    of no width. Then each image is a unit, and a warning says the interval cannot show the
    variation between patients.
    """
    codes = _codes(n, groups, what)
    if codes is not None and n and codes.max() == 0 and n_groups(groups) == 1:
        logger.warning("%s: all %d images are of one patient; resampling images, so the interval cannot show how "
                       "another patient would differ.", what, n)
        codes = None
    if codes is None:
        return [np.array([i]) for i in range(n)]
    return [np.flatnonzero(codes == code) for code in range(int(codes.max()) + 1)] if n else []


def draw_units(rng: np.random.Generator, units: list[np.ndarray]) -> np.ndarray:
    """One bootstrap resample: ``len(units)`` units drawn with replacement, their image indices
    concatenated (with single-image units, the same indices as ``rng.integers(0, n, size=n)``)."""
    picks = rng.integers(0, len(units), size=len(units))
    return np.concatenate([units[u] for u in picks]) if len(units) else np.zeros(0, dtype=np.int64)


def _fill_halves(codes: np.ndarray, order: np.ndarray) -> tuple[list[list[np.ndarray]], list[int]]:
    """Each patient (code) in ``order``, whole, to the half with fewer rows so far."""
    halves: list[list[np.ndarray]] = [[], []]
    counts = [0, 0]
    for code in order:
        rows = np.flatnonzero(codes == code)
        side = int(counts[1] < counts[0])
        halves[side].append(rows)
        counts[side] += len(rows)
    return halves, counts


def disjoint_halves(n_rows: int, n: int, rng: np.random.Generator, groups: Groups = None, *,
                    what: str = "real-vs-real floor") -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of row indices of the same size, ``min(n, ...)``, with no patient in both.

    Without groups: a random permutation, its first ``min(n, n_rows // 2)`` rows and the next as
    many. With groups: the patients in random order, each given whole to the half with fewer
    rows so far, so which patients land in which half changes with the draw. Where that leaves a
    half with fewer than ``n`` rows (few or uneven patients), the patients go largest first
    instead (ties in the random order), which balances the halves best. Then the same number of
    rows is drawn at random from each half (at most ``n``). When the patients cannot fill two
    halves of at least ``MIN_HALF`` rows (one patient, or one holding nearly every image), rows
    are split as without groups and a warning says the halves share patients.

    Returns:
        ``(first, second)`` sorted index arrays.
    """
    codes = _codes(n_rows, groups, what)
    if codes is not None and codes.max(initial=-1) >= 1:
        shuffled = rng.permutation(int(codes.max()) + 1)
        sizes = np.bincount(codes)
        halves, counts = _fill_halves(codes, shuffled)
        if min(counts) < n:
            halves, counts = _fill_halves(codes, shuffled[np.argsort(-sizes[shuffled], kind="stable")])
        size = min(n, *counts)
        if size >= MIN_HALF:
            return tuple(np.sort(rng.choice(np.concatenate(rows), size=size, replace=False))  # type: ignore[return-value]
                         for rows in halves)
    if codes is not None and n_rows:
        logger.warning("%s: the %d images of %d patient(s) cannot fill two halves of >= %d images with different "
                       "patients; the halves share patients.", what, n_rows, n_groups(groups), MIN_HALF)
    size = min(n, n_rows // 2)
    order = rng.permutation(n_rows)
    return np.sort(order[:size]), np.sort(order[size:2 * size])


def group_folds(n_rows: int, folds: int, rng: np.random.Generator, groups: Groups = None, *,
                what: str = "cross-validation") -> np.ndarray:
    """The fold (0..folds-1) of every row, with every patient's rows in one fold.

    Without groups: ``rng.permutation(n_rows) % folds``. With groups: the patients in random
    order, each given whole to the fold with fewest rows so far. With fewer patients than folds
    a fold would hold none, so rows are folded as without groups and a warning says so.
    """
    codes = _codes(n_rows, groups, what)
    if codes is None or codes.max(initial=-1) + 1 < folds:
        if codes is not None:
            logger.warning("%s: %d patients for %d folds; folding images, so a patient's images can sit in "
                           "training and test folds.", what, n_groups(groups), folds)
        return rng.permutation(n_rows) % folds
    fold_of = np.empty(n_rows, dtype=np.int64)
    sizes = np.zeros(folds, dtype=np.int64)
    for code in rng.permutation(int(codes.max()) + 1):
        rows = codes == code
        fold = int(np.argmin(sizes))
        fold_of[rows] = fold
        sizes[fold] += int(rows.sum())
    return fold_of


def subset(groups: Groups, rows: np.ndarray) -> np.ndarray | None:
    """The patient keys of ``rows`` (None without groups)."""
    return None if groups is None else np.asarray(groups, dtype=object)[rows]


def same_groups(first: Groups, second: Groups) -> bool:
    """Whether two key sequences are the same, row for row (missing keys equal to missing keys)."""
    return bool(pd.Series(np.asarray(first, dtype=object)).equals(pd.Series(np.asarray(second, dtype=object))))


def n_groups(groups: Groups) -> int | None:
    """How many patients ``groups`` holds, rows without a key not counted (None without groups)."""
    return None if groups is None else int(pd.Series(np.asarray(groups, dtype=object)).nunique(dropna=True))
