"""Tests for synthmed.generators.pix2pix3d: the volume family behind the generator contract.

Shapes and the contract (a training step, finite losses, both networks updated), the shared
trainer on volumes (a resumed run equals a straight one bit for bit), sampling from a label
map (in a plan too), and a save/load round trip through safetensors and ``weights_only``.
Tiny volumes (8^3) from in-memory arrays: the volume array store is another module's work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthmed.generators import pix2pix3d
from synthmed.generators.base import Conditions, SamplerSpec, StepContext
from synthmed.generators.common import write_checksums, write_generator_files
from synthmed.generators.previews import check_training_input, preview_conditions, sample_grid
from synthmed.generators.registry import FAMILIES, config_from_params, get_family, load_generator
from synthmed.generators.sampling import ThroughputConfig, generate_from_plan
from synthmed.generators.training import ArrayBatches, TrainingConfig, checkpoint_dirs, load_trainer_state, train
from synthmed.parameters import ParameterError, validate_parameters
from tests.conftest import load_parameters

SIDE, LABELS = 8, 5
TINY = {"image_size": SIDE, "channels": 1, "label_classes": LABELS, "base_channels": 4, "depth": 3,
        "discriminator_layers": 2}


def _config(**overrides) -> pix2pix3d.Config:
    return config_from_params("pix2pix3d", {**TINY, **overrides})


def _context(seed: int = 0, clip=None) -> StepContext:
    return StepContext(backward=lambda loss: loss.backward(), clip=clip or (lambda params: None),
                       generator=torch.Generator().manual_seed(seed), autocast=contextlib.nullcontext, step=0)


def volume_store(n: int, side: int = SIDE, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` phantom heads: a tissue ball (labels 1-3 by radius), a lesion (4) at a random place,
    and an image whose intensity follows the labels (what the generator must learn to draw)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij")).astype(np.float32)
    radius = np.sqrt(((grid - (side - 1) / 2) ** 2).sum(0))
    tissue = np.select([radius < side * 0.2, radius < side * 0.35, radius < side * 0.48], [3, 2, 1], 0)
    label_maps, masks = np.zeros((n, 1, side, side, side), np.uint8), np.zeros((n, 1, side, side, side), np.uint8)
    for i in range(n):
        centre = rng.uniform(side * 0.3, side * 0.7, 3)
        lesion = (np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0)) < side / 6) & (tissue > 0)
        label_maps[i, 0] = np.where(lesion, 4, tissue)
        masks[i, 0] = lesion
    images = (label_maps.astype(np.float32) / 2.0 - 1.0) + rng.normal(0, 0.05, label_maps.shape)
    return {"images": np.clip(images, -1, 1).astype(np.float32), "labels": np.zeros(n, np.int64),
            "masks": masks, "label_maps": label_maps}


def _batch(n: int = 2, seed: int = 0, side: int = SIDE) -> dict[str, torch.Tensor]:
    item = ArrayBatches(volume_store(n, side=side, seed=seed), np.arange(n))
    items = [item[i] for i in range(n)]
    return {key: torch.stack([it[key] for it in items]) for key in items[0]}


def _conditions(batch: dict[str, torch.Tensor]) -> Conditions:
    return Conditions(n=batch["images"].shape[0], label_maps=batch["label_maps"], masks=batch["masks"])


# ----------------------------------------------------------------------------- config and registry


def test_registered_as_a_volume_family_outside_the_pipelines_families():
    spec = get_family("pix2pix3d")
    assert spec is pix2pix3d.FAMILY and spec.spatial_dims == 3
    assert "pix2pix3d" not in FAMILIES  # the image pipelines (and make demo) do not run it
    assert spec.sample_shape(_config()) == (1, SIDE, SIDE, SIDE)


@pytest.mark.parametrize("env", ["base", "gpu"])
def test_the_parameter_blocks_build(env):
    block = load_parameters(env)["pix2pix3d"]
    config = config_from_params("pix2pix3d", block["model"])
    assert block["family"] == "pix2pix3d" and block["run"]["source"] == "volumes"
    # The project's parameter check knows the block: a misspelt key is named before any node runs.
    params = load_parameters(env)
    params["pix2pix3d"]["model"]["label_encodng"] = "scaled"
    with pytest.raises(ParameterError, match=r"Unknown key\(s\) \['label_encodng'\] in parameters 'pix2pix3d.model'"):
        validate_parameters(params)
    TrainingConfig(**block["training"])
    assert config.image_size == (32 if env == "base" else 128)
    assert config.image_size == 2**config.depth  # a 1-voxel bottleneck, as in the paper


def test_mask_channels_follow_the_label_encoding():
    assert _config().mask_channels == LABELS + 1  # one-hot labels + the lesion mask
    assert _config(label_encoding="scaled").mask_channels == 2
    assert _config().needed_conditions() == frozenset({"masks", "label_maps"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label_encoding": "onehot"},
         r"pix2pix3d label_encoding must be one of \['one_hot', 'scaled'\], got 'onehot'"),
        ({"label_classes": 1}, r"pix2pix3d label_classes must be an integer >= 2, got 1"),
        ({"image_size": 12}, r"pix2pix3d image_size must be divisible by 2\*\*depth = 8, got image_size=12"),
        ({"lambda_l1": -1.0}, r"pix2pix3d lambda_l1 must be a number >= 0, got -1.0"),
        ({"num_classes": 3}, r"pix2pix3d num_classes must be 0"),
        ({"lesion_l1_weight": -1.0}, r"pix2pix3d lesion_l1_weight must be a number >= 0, got -1.0"),
        ({"lesion_paste": 1.5}, r"pix2pix3d lesion_paste must be a probability in \[0, 1\], got 1.5"),
        ({"upsampling": "trilinear"},
         r"pix2pix3d upsampling must be one of \['transpose', 'resize'\], got 'trilinear'"),
    ],
)
def test_invalid_config_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


# ----------------------------------------------------------------------------- shapes and the step


@pytest.mark.parametrize(("encoding", "upsampling"), [("one_hot", "transpose"), ("scaled", "transpose"),
                                                     ("one_hot", "resize")])
def test_network_and_sample_shapes(encoding, upsampling):
    config = _config(label_encoding=encoding, channels=2, upsampling=upsampling)
    models = pix2pix3d.build(config, 0)
    assert isinstance(models["generator"].down[0].conv, torch.nn.Conv3d)
    transposed = any(isinstance(m, torch.nn.ConvTranspose3d) for m in models["generator"].modules())
    assert transposed == (upsampling == "transpose")
    batch = _batch(3)
    x = pix2pix3d.encode_conditions(batch["label_maps"], batch["masks"], config, "test")
    assert x.shape == (3, config.mask_channels, SIDE, SIDE, SIDE) and x.min() >= -1 and x.max() <= 1
    fake = models["generator"](x)
    assert fake.shape == (3, 2, SIDE, SIDE, SIDE)
    side = SIDE // 2**config.discriminator_layers  # a logit per overlapping cube
    assert models["discriminator"](x, fake).shape == (3, 1, side, side, side)
    volumes = pix2pix3d.sample(models, config, _conditions(batch), SamplerSpec(), torch.Generator().manual_seed(0))
    assert volumes.shape == (3, 2, SIDE, SIDE, SIDE) and volumes.dtype == torch.float32
    assert volumes.device.type == "cpu" and volumes.min() >= -1 and volumes.max() <= 1


def test_the_default_upsampling_is_the_papers_network_unchanged():
    # Layout digest taken before `upsampling` existed (commit 7e570fd). The weights' digest and the
    # output values were recorded at a commit whose output matched 7e570fd's bit for bit there; the
    # output is compared to 1e-6, not by digest: convolution kernels differ by CPU (an AVX-512 EPYC
    # summed in another order and changed the last bits), the weights do not.
    models = pix2pix3d.build(_config(), 0)
    x = torch.rand(2, LABELS + 1, SIDE, SIDE, SIDE, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out = pix2pix3d.translate(models, x, torch.Generator().manual_seed(1))
    layout = [(k, tuple(v.shape)) for k, v in models.state_dict().items()]
    assert hashlib.sha256(repr(layout).encode()).hexdigest() == (
        "dcc587a524c4b59e722f933d95187d2961f988a92334413ff695aef82266696f")
    weights = hashlib.sha256()
    for name, value in models.state_dict().items():
        weights.update(name.encode())
        weights.update(value.contiguous().numpy().tobytes())
    assert weights.hexdigest() == "d5c3b1d2c7a66dd0a5c8144357a372a494264ea44ddd0f2400e4a1f7efe21808"
    assert out.shape == (2, 1, SIDE, SIDE, SIDE)
    recorded = [0.004177670460194349, -0.008829444646835327, -0.029346337541937828, -0.00010798219591379166,
                -0.00686511117964983, 0.008685282431542873, 0.02553992159664631, 0.003382466733455658]
    np.testing.assert_allclose(out.flatten()[:: out.numel() // 7].numpy(), recorded, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.double().abs().sum().item(), 9.41523495566048, rtol=1e-5)


def test_one_hot_encoding_puts_each_label_in_its_channel_and_the_lesion_last():
    config = _config()
    batch = _batch(1)
    x = pix2pix3d.encode_conditions(batch["label_maps"], batch["masks"], config, "test")
    labels = batch["label_maps"][0, 0]
    for k in range(LABELS):
        assert torch.equal(x[0, k] > 0, labels == k)
    assert torch.equal(x[0, LABELS] > 0, batch["masks"][0, 0] > 0)


def test_labels_outside_the_configured_range_are_refused():
    config = _config(label_classes=4)  # the batch holds the lesion label 4
    batch = _batch(2)
    with pytest.raises(ValueError, match=r"batch label_maps hold values 0\.\.4, expected 0\.\.3 .*raise label_classes"):
        pix2pix3d.encode_conditions(batch["label_maps"], batch["masks"], config, "batch")


def test_train_step_updates_both_networks_with_finite_losses():
    config = _config(grad_clip_norm=1.0)
    models = pix2pix3d.build(config, 0)
    optimizers = pix2pix3d.make_optimizers(models, config)
    before = {name: [p.detach().clone() for p in module.parameters()] for name, module in models.items()}
    clipped, global_state = [], torch.get_rng_state()
    losses = pix2pix3d.train_step(models, optimizers, _batch(2), config, _context(clip=clipped.append))
    assert torch.equal(torch.get_rng_state(), global_state)  # dropout and flips from step.generator only
    assert set(losses) == {"loss_d", "loss_g_adv", "loss_g_l1"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values())
    assert 0.0 < losses["loss_g_l1"] <= 2.0  # |y - tanh(.)| with y in [-1, 1]
    assert len(clipped) == 2
    for name, module in models.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters())), name


def _one_step(config: pix2pix3d.Config, batch: dict[str, torch.Tensor]):
    models = pix2pix3d.build(config, 0)
    losses = pix2pix3d.train_step(models, pix2pix3d.make_optimizers(models, config), batch, config, _context())
    return models, losses


def test_lesion_l1_weight_adds_the_l1_inside_the_lesion():
    batch = _batch(2)
    plain, plain_losses = _one_step(_config(), batch)
    focused, losses = _one_step(_config(lesion_l1_weight=20.0), batch)
    assert "loss_g_focus" not in plain_losses and 0.0 < losses["loss_g_focus"] <= 2.0
    assert losses["loss_d"] == plain_losses["loss_d"]  # the D step comes first, unchanged
    changed = [not torch.equal(a, b) for a, b in zip(plain["generator"].parameters(),
                                                       focused["generator"].parameters())]
    assert any(changed)
    # Without lesion voxels the extra term is 0 and the step is the paper's, bit for bit.
    empty = {**batch, "masks": torch.zeros_like(batch["masks"]),
             "label_maps": torch.where(batch["label_maps"] == 4, 3, batch["label_maps"])}
    plain, _ = _one_step(_config(), empty)
    focused, losses = _one_step(_config(lesion_l1_weight=20.0), empty)
    assert losses["loss_g_focus"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(plain["generator"].parameters(), focused["generator"].parameters()))


def test_paste_lesions_copies_a_real_lesion_onto_parenchyma_with_its_contrast():
    # Two heads of 16^3: CSF outside, grey matter, a white matter core; a lesion of 2x3x2 voxels in
    # the first only; the second's intensities on another gain and offset.
    labels = torch.zeros(2, 1, 16, 16, 16, dtype=torch.int64)
    labels[:, :, 1:15, 1:15, 1:15] = 1
    labels[:, :, 2:14, 2:14, 2:14] = 2
    labels[:, :, 4:12, 4:12, 4:12] = 3
    labels[0, 0, 5:7, 5:8, 6:8] = 4
    value = torch.tensor([-1.0, -0.6, 0.3, 0.0, 0.9])
    noise = torch.Generator().manual_seed(1)
    images = value[labels] + 0.05 * torch.randn(labels.shape, generator=noise)
    images[1] = images[1] * 0.5 + 0.1
    batch = {"label_maps": labels, "masks": (labels == 4).float(), "images": images}
    original = {k: v.clone() for k, v in batch.items()}
    maps, masks, images = pix2pix3d.paste_lesions(batch["label_maps"], batch["masks"], batch["images"], 1.0,
                                                  torch.Generator().manual_seed(0))
    assert all(torch.equal(batch[k], original[k]) for k in batch)  # inputs untouched
    new = (masks[1, 0] > 0) & (original["masks"][1, 0] == 0)
    donor = original["masks"][0, 0] > 0
    assert int(new.sum()) == int(donor.sum())  # the donor's one lesion, whole
    offsets = torch.nonzero(new) - torch.nonzero(new).min(0).values
    assert torch.equal(offsets, torch.nonzero(donor) - torch.nonzero(donor).min(0).values)  # same shape
    assert torch.isin(original["label_maps"][1, 0][new], torch.tensor([2, 3])).all()  # landed on parenchyma
    assert (maps[1, 0][new] == 4).all() and torch.equal(maps[1, 0] == 4, masks[1, 0] > 0)
    # Its intensities keep their distance to white matter in units of the white matter - CSF contrast.
    def relative(values, before, labels):  # tissue medians of the volume before the paste
        white, csf = before[labels == 3].median(), before[labels == 1].median()
        return ((values - white) / (white - csf)).sort().values
    torch.testing.assert_close(relative(images[1, 0][new], original["images"][1, 0], original["label_maps"][1, 0]),
                               relative(original["images"][0, 0][donor], original["images"][0, 0],
                                        original["label_maps"][0, 0]))
    # Seeded; probability 0 returns the batch as it is.
    again = pix2pix3d.paste_lesions(batch["label_maps"], batch["masks"], batch["images"], 1.0,
                                    torch.Generator().manual_seed(0))
    assert torch.equal(again[2], images)
    off = pix2pix3d.paste_lesions(batch["label_maps"], batch["masks"], batch["images"], 0.0, torch.Generator())
    assert all(a is b for a, b in zip(off, (batch["label_maps"], batch["masks"], batch["images"])))


def test_train_step_names_what_a_batch_lacks_or_gets_wrong():
    config = _config()
    models = pix2pix3d.build(config, 0)
    optimizers = pix2pix3d.make_optimizers(models, config)
    batch = _batch(2)
    with pytest.raises(ValueError, match=r"missing \['label_maps'\].*key 'label_maps'"):
        pix2pix3d.train_step(models, optimizers, {k: v for k, v in batch.items() if k != "label_maps"}, config,
                             _context())
    with pytest.raises(ValueError, match=r"batch\['images'\] with shape \(2, 1, 8, 8, 8\), got \(2, 1, 8, 8\)"):
        pix2pix3d.train_step(models, optimizers, {**batch, "images": batch["images"][:, :, 0]}, config, _context())


def test_flips_move_condition_and_volume_together():
    x = torch.arange(4 * 2 * 2 * 2 * 3, dtype=torch.float32).view(4, 2, 2, 2, 3)
    y = x[:, :1] * 10
    fx, fy = pix2pix3d.flip_pairs(x, y, torch.Generator().manual_seed(0))
    flipped = [not torch.equal(fx[i], x[i]) for i in range(4)]
    assert any(flipped) and not all(flipped)  # seed 0: some pairs flipped, some not
    for i in range(4):
        assert torch.equal(fx[i], x[i].flip(-1) if flipped[i] else x[i])
        assert torch.equal(fy[i], fx[i, :1] * 10)


def test_learns_to_draw_the_labels():
    # Target volume = a fixed intensity per label: the L1 error of samples on held-out label
    # maps falls by more than half in 60 steps (measured: 0.61 -> 0.06 with these settings).
    config = _config(learning_rate=2e-3, dropout=0.0, augment=False)
    models = pix2pix3d.build(config, 0)
    optimizers = pix2pix3d.make_optimizers(models, config)
    held_out = _batch(4, seed=99)

    def error() -> float:
        volumes = pix2pix3d.sample(models, config, _conditions(held_out), SamplerSpec(), torch.Generator())
        return (volumes - held_out["images"]).abs().mean().item()

    initial, context = error(), _context()
    for i in range(60):
        pix2pix3d.train_step(models, optimizers, _batch(4, seed=i), config, context)
    assert error() < 0.5 * initial


# ----------------------------------------------------------------------------- sampling


def test_sampling_from_a_label_map_is_seeded_and_follows_the_lesion():
    config = _config()
    models = pix2pix3d.build(config, 0)
    batch = _batch(2)
    conditions = _conditions(batch)

    def draw(c: Conditions, seed: int) -> torch.Tensor:
        return pix2pix3d.sample(models, config, c, SamplerSpec(), torch.Generator().manual_seed(seed))

    global_state = torch.get_rng_state()
    assert torch.equal(draw(conditions, 5), draw(conditions, 5))
    assert not torch.equal(draw(conditions, 5), draw(conditions, 6))  # test-time dropout is the noise
    assert torch.equal(torch.get_rng_state(), global_state)
    # The volume follows both inputs: another lesion mask alone, or another label map alone,
    # gives another volume.
    moved = batch["masks"].flip(-1)
    assert not torch.equal(draw(Conditions(n=2, label_maps=batch["label_maps"], masks=moved), 5), draw(conditions, 5))
    label_maps = torch.where(moved > 0, 4, torch.where(batch["masks"] > 0, 2, batch["label_maps"]))
    assert not torch.equal(draw(Conditions(n=2, label_maps=label_maps, masks=batch["masks"]), 5),
                           draw(conditions, 5))


def test_sample_needs_label_maps_and_masks():
    config = _config()
    models = pix2pix3d.build(config, 0)
    batch = _batch(2)
    generator = torch.Generator()
    with pytest.raises(ValueError, match=r"need Conditions\.label_maps and Conditions\.masks.*label_maps=False"):
        pix2pix3d.sample(models, config, Conditions(n=2, masks=batch["masks"]), SamplerSpec(), generator)
    with pytest.raises(ValueError, match=r"unsupported Conditions \['labels'\]"):
        pix2pix3d.sample(models, config, Conditions(n=2, labels=torch.zeros(2, dtype=torch.long),
                                                    masks=batch["masks"], label_maps=batch["label_maps"]),
                         SamplerSpec(), generator)
    with pytest.raises(ValueError, match=r"Conditions label_maps with shape \(N, 1, 8, 8, 8\), got \(2, 1, 4, 4, 4\)"):
        pix2pix3d.sample(models, config, Conditions(n=2, label_maps=batch["label_maps"][..., :4, :4, :4],
                                                    masks=batch["masks"]), SamplerSpec(), generator)


def test_a_sampling_plan_draws_volumes_from_real_label_maps():
    spec, config = get_family("pix2pix3d"), _config(dropout=0.0)  # no noise: a volume depends on its condition only
    models = spec.build(config, 0)
    real = volume_store(6, side=2 * SIDE)  # stored at 16^3: downsampled to the model's 8^3 like training
    plan = pd.DataFrame([{"condition": "mask", "label": "", "count": 5, "case": ""}])

    def run(seed: int):
        # fp32 as the direct call below (``auto`` is bf16 on CUDA and on AMX CPUs)
        return generate_from_plan(spec, config, models, plan, [], SamplerSpec(), seed=seed, batch_size=2,
                                  checkpoint="c", real=real, real_indices=np.arange(1, 6),
                                  throughput=ThroughputConfig(precision="fp32"))

    result = run(0)
    assert result.images.shape == (5, 1, SIDE, SIDE, SIDE) and result.masks.shape == (5, 1, SIDE, SIDE, SIDE)
    assert result.provenance["source_index"].tolist() == [1, 2, 3, 4, 5]
    assert result.provenance["seed"].tolist() == [0, 0, 1, 1, 2]
    expected_mask = torch.nn.functional.interpolate(torch.from_numpy(real["masks"][1:2]).float(), size=SIDE,
                                                    mode="nearest")
    assert np.array_equal(result.masks[:1], expected_mask.numpy().astype(np.uint8))
    assert np.array_equal(run(0).images, result.images)
    # The volume is drawn from the source's label map and mask: that condition alone gives the same volume.
    label_map = torch.nn.functional.interpolate(torch.from_numpy(real["label_maps"][1:2]).float(), size=SIDE,
                                                mode="nearest").long()
    alone = spec.sample(models, config, Conditions(n=1, label_maps=label_map, masks=expected_mask), SamplerSpec(),
                        torch.Generator().manual_seed(0))
    assert not np.array_equal(alone.numpy(), result.images[1:2])  # another volume in the same batch differs
    torch.testing.assert_close(alone, torch.from_numpy(result.images[:1]))


# ----------------------------------------------------------------------------- trainer, save and load


def _train(root: Path, steps: int, on_step=None, n: int = 10, upsampling: str = "transpose"):
    spec, config = get_family("pix2pix3d"), _config(upsampling=upsampling)
    training = TrainingConfig(steps=steps, batch_size=2, seed=3, checkpoint_every=3, log_every=1, device="cpu")
    return train(spec, config, training, ArrayBatches(volume_store(n), np.arange(n)), root, on_step=on_step)


class Stop(Exception):
    """Raised from ``on_step`` to interrupt training like a crash would."""


@pytest.mark.parametrize("upsampling", ["transpose", "resize"])
def test_resumed_training_equals_a_straight_run_bit_for_bit(tmp_path, upsampling):
    steps, resume_step = 8, 3  # 5 batches an epoch: the checkpoint at step 3 is mid-epoch
    straight, straight_history = _train(tmp_path / "straight", steps, upsampling=upsampling)

    def stop(step: int) -> None:
        if step == resume_step + 1:
            raise Stop

    with pytest.raises(Stop):
        _train(tmp_path / "resumed", steps, on_step=stop, upsampling=upsampling)
    assert [d.name for d in checkpoint_dirs(tmp_path / "resumed")] == [f"step-{resume_step:09d}"]
    trained: list[int] = []
    resumed, history = _train(tmp_path / "resumed", steps, on_step=trained.append, upsampling=upsampling)
    assert trained == list(range(resume_step + 1, steps + 1))  # it resumed, not restarted
    first, second = straight.state_dict(), resumed.state_dict()
    assert list(first) == list(second)
    assert [k for k in first if not torch.equal(first[k], second[k])] == []
    assert [r["step"] for r in history] == list(range(1, steps + 1))
    assert [r["loss_g_l1"] for r in history] == [r["loss_g_l1"] for r in straight_history]


@pytest.mark.parametrize("upsampling", ["transpose", "resize"])
def test_checkpoints_and_saved_models_hold_no_pickle_and_round_trip(tmp_path, upsampling):
    models, _ = _train(tmp_path / "run", 3, upsampling=upsampling)
    folder = checkpoint_dirs(tmp_path / "run")[0]
    assert sorted(p.name for p in folder.iterdir()) == [
        "checksums.json", "discriminator.safetensors", "generator.json", "generator.safetensors", "history.json",
        "trainer_state.pt"]
    assert load_trainer_state(folder)["step"] == 3  # torch.load(weights_only=True): tensors and containers only

    config = _config(upsampling=upsampling)
    (tmp_path / "saved").mkdir()
    write_generator_files(tmp_path / "saved", "pix2pix3d", config, models)
    write_checksums(tmp_path / "saved")
    manifest = json.loads((tmp_path / "saved/generator.json").read_text())
    assert manifest["family"] == "pix2pix3d"
    assert manifest["config"]["upsampling"] == upsampling  # the loader rebuilds this architecture
    spec, loaded_config, loaded = load_generator(tmp_path / "saved")
    assert spec.name == "pix2pix3d" and loaded_config == config
    conditions = _conditions(_batch(2))
    expected = pix2pix3d.sample(models, config, conditions, SamplerSpec(), torch.Generator().manual_seed(4))
    got = spec.sample(loaded, loaded_config, conditions, SamplerSpec(), torch.Generator().manual_seed(4))
    assert torch.equal(expected, got)


def test_array_batches_downsample_volumes_and_label_maps():
    store = volume_store(2, side=16)
    item = ArrayBatches(store, np.arange(2), size=8)[1]
    assert item["images"].shape == (1, 8, 8, 8) and item["images"].dtype == torch.float32
    assert item["label_maps"].dtype == torch.int64 and item["masks"].shape == (1, 8, 8, 8)
    labels = torch.from_numpy(store["label_maps"][1]).float()[None]
    expected = torch.nn.functional.interpolate(labels, size=8, mode="nearest")[0].long()
    assert torch.equal(item["label_maps"], expected)
    assert set(item["label_maps"].unique().tolist()) <= set(range(LABELS))
    block_mean = torch.from_numpy(store["images"][1]).view(1, 8, 2, 8, 2, 8, 2).mean(dim=(2, 4, 6))
    torch.testing.assert_close(item["images"], block_mean)  # area: the mean of each 2x2x2 block


def test_training_input_must_be_volumes_for_a_volume_family():
    config = _config()
    check_training_input("pix2pix3d", config, (10, 1, 16, 16, 16), [], "volumes", spatial_dims=3)
    with pytest.raises(ValueError, match=r"pix2pix3d trains on volumes \(N, C, D, H, W\), but slices are shaped"):
        check_training_input("pix2pix3d", config, (10, 1, 16, 16), [], "slices", spatial_dims=3)
    with pytest.raises(ValueError, match=r"ddpm trains on images \(N, C, H, W\), but volumes are shaped"):
        check_training_input("ddpm", config, (10, 1, 16, 16), [], "volumes")


def test_a_preview_grid_shows_central_slices():
    spec, config = get_family("pix2pix3d"), _config()
    store = volume_store(4)
    conditions = preview_conditions(config, store, np.arange(4), per_class=3, num_classes=0)
    assert conditions.label_maps.shape == (3, 1, SIDE, SIDE, SIDE) and conditions.labels is None
    figure = sample_grid(spec, config, spec.build(config, 0), conditions, SamplerSpec(), [], 0, "pix2pix3d")
    assert len([ax for ax in figure.axes if ax.images]) == 3
