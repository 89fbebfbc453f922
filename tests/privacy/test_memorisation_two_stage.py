"""The two-stage search of the memorisation gate (issue 13, item 3) against the exact one.

The first stage shortlists, per query, the references whose compact thumbnails correlate
best under any flip and shift; the exact search then runs on the shortlist only. It can only
lose matches, never invent them, so its similarities are at most the exact ones; what must
hold is that every planted copy the exact search flags is flagged by the two-stage one, from
the same training image. Data: the smooth fields and anatomy-like phantoms of
test_memorisation.py (a body on air: every thumbnail looks alike, the hard case for a
shortlist).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthmed.privacy.memorisation import (
    GateConfig,
    SearchConfig,
    _prepare_references,
    prepare_gate,
    run_gate,
    shift_image,
    shortlist_references,
    zoom_references,
)
from tests.privacy.test_memorisation import phantoms, smooth_fields

EXACT = 10**9  # two_stage_above: never two stages
SEARCH = {"flips": ("none", "horizontal", "vertical"), "max_shift_px": 2, "zooms": (1.0, 0.9)}


def _gate(two_stage_above: int, shortlist: int = 16) -> GateConfig:
    return GateConfig(percentile=99.0, use_features=False, plant={"count": 150},
                      search={**SEARCH, "two_stage_above": two_stage_above, "shortlist": shortlist})


@pytest.mark.parametrize("images", [smooth_fields, phantoms], ids=["smooth_fields", "phantoms"])
def test_two_stage_flags_every_planted_copy_the_exact_search_flags(images):
    train, held_out = images(300, 11), images(100, 12)
    candidates = torch.cat([images(20, 13), train[[4, 50, 200]].flip(-1)])  # unrelated + mirrored copies
    exact = run_gate(candidates, train, held_out, config=_gate(EXACT))
    staged = run_gate(candidates, train, held_out, config=_gate(0))

    # A subset search: never more similar than the exact one, up to float32 rounding: the two
    # paths sum the same products in another order (1.7e-6 apart on an AVX-512 EPYC, where 1e-6
    # failed; 1.8e-6 on another such EPYC in the closeness check below).
    for table in ("planted", "held_out", "candidates"):
        ours, theirs = getattr(staged, table), getattr(exact, table)
        assert (ours["pixel_similarity"].to_numpy() <= theirs["pixel_similarity"].to_numpy() + 1e-5).all(), table
    found = exact.planted["flagged"].to_numpy()
    # Enough copies to compare (pixel NCC misses cropped copies of anatomy: test_memorisation.py).
    assert found.sum() >= len(found) // 2
    recall = staged.planted["flagged"].to_numpy()[found].mean()
    assert recall == 1.0, f"two-stage recall against the exact search {recall:.4f}"
    neighbours = staged.planted["pixel_neighbour"].to_numpy(), exact.planted["pixel_neighbour"].to_numpy()
    assert (neighbours[0][found] == neighbours[1][found]).all()
    np.testing.assert_allclose(staged.planted["pixel_similarity"].to_numpy()[found],
                               exact.planted["pixel_similarity"].to_numpy()[found], rtol=0, atol=1e-5)
    # A lower threshold (a held-out neighbour missed) can only flag more, never fewer.
    assert staged.pixel_threshold <= exact.pixel_threshold + 1e-6
    assert staged.candidates["flagged"].to_numpy()[-3:].all() and exact.candidates["flagged"].to_numpy()[-3:].all()


def test_shortlist_puts_the_source_of_a_flipped_shifted_copy_first():
    train = phantoms(200, 21)
    search = SearchConfig(**SEARCH, two_stage_above=0, shortlist=4)
    prepared = _prepare_references(zoom_references(train, search), search, None, 64)
    copies = shift_image(train[[7, 120, 199]].flip(-1), 2, -1) * 0.9 + 0.05
    shortlist = shortlist_references(copies, prepared.compact, search)
    assert shortlist.shape == (3, 4)
    assert shortlist[:, 0].tolist() == [7, 120, 199]


def test_two_stages_start_above_the_configured_number_of_references():
    train = smooth_fields(50, 31)
    zoomed = zoom_references(train, SearchConfig(**SEARCH, zoom_positions=1))  # 100 references: 50 x (1 + 1 crop)
    at = SearchConfig(**SEARCH, two_stage_above=100)
    above = SearchConfig(**SEARCH, two_stage_above=99)
    assert _prepare_references(zoomed, at, None, 64).compact is None
    compact = _prepare_references(zoomed, above, None, 64).compact
    assert compact.shape == (3, 100, 8 * 8)  # flips x references x thumbnail
    assert torch.allclose(compact.norm(dim=2), torch.ones(3, 100), atol=1e-5)


def test_a_prepared_gate_scores_every_batch_like_a_fresh_run():
    train, held_out = smooth_fields(120, 41), smooth_fields(60, 42)
    config = _gate(EXACT)
    prepared = prepare_gate(train, held_out, config=config)
    for batch in (smooth_fields(10, 43), torch.cat([train[:3], smooth_fields(2, 44)])):
        ours, fresh = prepared.score(batch), run_gate(batch, train, held_out, config=config)
        assert ours.candidates.equals(fresh.candidates)
        assert ours.pixel_threshold == fresh.pixel_threshold and ours.self_test_recall == fresh.self_test_recall
    with pytest.raises(ValueError, match="Expected candidates with the"):
        prepared.score(smooth_fields(2, 45, size=16))


@pytest.mark.parametrize("key, value", [("two_stage_above", -1), ("shortlist", 0), ("embedding_px", 0),
                                        ("shortlist", 2.5)])
def test_search_config_refuses_bad_two_stage_settings(key, value):
    with pytest.raises(ValueError, match=f"SearchConfig.{key} must be an integer"):
        SearchConfig(**{key: value})


def test_gate_device_is_checked():
    assert GateConfig().search_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="GateConfig.device must be one of"):
        GateConfig(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            GateConfig(device="cuda")
