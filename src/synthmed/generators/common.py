"""Pieces shared by every family: saving and loading, EMA, weight initialisation, seeding.

A saved generator is a folder::

    generator.json      {"format", "family", "config", "modules", "class_names", "source"}
    MODEL_CARD.md       what it was trained on and how, and how to sample from it (final models)
    <module>/           diffusers models (``save_pretrained``: config.json + safetensors)
    <module>.safetensors   other torch modules (state dict)
    checksums.json      sha256 and size of every file above, written last

Nothing is pickled. ``load_generator`` refuses a folder whose checksums do not match (an
interrupted save, a corrupted copy). Checksums are written and verified by
``synthmed.core.checksums`` (verified once per unchanged file and process).
"""

from __future__ import annotations

import dataclasses
import errno
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from synthmed.core.atomic import free_bytes
from synthmed.core.checksums import ChecksumError, read_listing, sha256_bytes, verify_listing, write_listing
from synthmed.core.lazy import lazy_import, lazy_module
from synthmed.core.templates import render

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
torch = lazy_import("torch")
nn = lazy_import("torch.nn")
# Functions named here (tests replace save_file to simulate a full disk); imported on the first call.
save_file = lazy_module("safetensors.torch").save_file
load_file = lazy_module("safetensors.torch").load_file

FORMAT = "synthmed-generator/1"
CHECKSUMS = "checksums.json"
MANIFEST = "generator.json"
MODEL_CARD = "MODEL_CARD.md"


class CheckpointError(RuntimeError):
    """A saved generator or checkpoint is missing, incomplete or corrupt."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint or saved generator failed: disk full, quota, permissions.

    An ``OSError`` (``errno`` is the underlying one, ENOSPC for a full disk) whose message
    names the path, the bytes the write needs and the bytes free on that filesystem.
    """

    def __init__(self, path: Path, needed: int, free: int | None, cause: BaseException):
        self.path, self.needed, self.free = Path(path), int(needed), free
        code = getattr(cause, "errno", None) or (errno.ENOSPC if free is not None and free < needed else errno.EIO)
        free_text = "unknown" if free is None else f"{free} bytes ({_mib(free)})"
        super().__init__(
            code,
            f"Could not write {path}: {type(cause).__name__}: {cause}. It needs about {needed} bytes "
            f"({_mib(needed)}); free on that filesystem: {free_text}. Free space or point the path elsewhere, "
            "then rerun (training resumes from the newest complete checkpoint).",
        )

    def __str__(self) -> str:  # OSError's str() would prefix "[Errno 28]" to the sentence above
        return self.strerror


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"



def state_nbytes(value: Any) -> int:
    """Bytes of every tensor in ``value`` (a module, or nested dicts/lists/tuples of tensors).

    A lower bound of what saving it writes: the files add headers and metadata.
    """
    if isinstance(value, nn.Module):
        value = value.state_dict()
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(state_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(state_nbytes(v) for v in value)
    return 0


# What a full disk looks like while writing: the OS error itself, or torch/safetensors
# wrapping it ("unexpected pos ..." from torch's zip writer, "IoError ... code: 28").
WRITE_FAILURES = (OSError, RuntimeError, SafetensorError)


def as_write_error(path: Path, needed: int, exc: BaseException) -> BaseException:
    """``exc`` as a ``CheckpointWriteError`` when it is a failed write, else ``exc`` itself.

    A ``RuntimeError``/``SafetensorError`` counts as a failed write only when the
    filesystem has less free space than the write needs (torch reports a full disk as
    "unexpected pos"); other ones are bugs and are returned unchanged.
    """
    if isinstance(exc, CheckpointWriteError):
        return exc
    free = free_bytes(path)
    if isinstance(exc, OSError) or (free is not None and free < needed):
        return CheckpointWriteError(path, needed, free, exc)
    return exc


def weights_file(folder: Path, name: str, module: nn.Module) -> Path:
    """Where module ``name``'s safetensors weights live in a saved generator folder."""
    if hasattr(module, "save_pretrained"):
        return folder / name / "diffusion_pytorch_model.safetensors"
    return folder / f"{name}.safetensors"


def write_generator_files(folder: Path, family: str, config: Any, models: nn.ModuleDict, *,
                          class_names: Sequence[str] = (), card: Mapping[str, Any] | None = None) -> None:
    """Write the module weights and ``generator.json`` into an existing folder (no checksums).

    Args:
        class_names: class names by class id, kept in ``generator.json``.
        card: the model card's facts (training data, training settings, last losses); when
            given, ``MODEL_CARD.md`` is written too (template ``model_card.md.j2``), and its
            ``source`` (the extraction output trained on) is kept in ``generator.json``.

    Raises:
        CheckpointWriteError: the filesystem refused a write (full disk, quota, permissions).
    """
    try:
        _write_generator_files(folder, family, config, models, class_names, card)
    except WRITE_FAILURES as exc:
        error = as_write_error(folder, state_nbytes(models), exc)
        if error is exc:
            raise
        raise error from exc


def _write_generator_files(folder: Path, family: str, config: Any, models: nn.ModuleDict,
                           class_names: Sequence[str], card: Mapping[str, Any] | None) -> None:
    for name, module in models.items():
        if hasattr(module, "save_pretrained"):  # diffusers ModelMixin
            module.save_pretrained(folder / name, safe_serialization=True)
        else:
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, folder / f"{name}.safetensors")
    manifest = {"format": FORMAT, "family": family, "config": dataclasses.asdict(config), "modules": list(models),
                "class_names": list(class_names)}
    if card and card.get("source"):
        manifest["source"] = card["source"]  # what it learnt (slices, lesion_patches, ...): read back on load
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if card is not None:
        (folder / MODEL_CARD).write_text(render(
            "model_card.md.j2", family=family, format=FORMAT, config=config, class_names=list(class_names),
            conditions=sorted(config.needed_conditions()), card=card), encoding="utf-8")


def write_checksums(folder: Path) -> None:
    """Record sha256 and size of every file in ``folder``; called last, it marks the folder complete."""
    write_listing(folder, CHECKSUMS)


def verify_checksums(folder: Path) -> None:
    """Raise ``CheckpointError`` unless every file listed in checksums.json matches.

    The message names the file, the recorded and the found sha256 (or size) and the fix.
    Older listings without sizes (``{relpath: sha256}``) are still read.
    """
    listing = folder / CHECKSUMS
    if not listing.is_file():
        raise CheckpointError(
            f"{folder} has no {CHECKSUMS}: the save was interrupted or this is not a generator folder."
        )
    try:
        verify_listing(folder, read_listing(listing))
    except ChecksumError as exc:
        raise CheckpointError(str(exc)) from exc


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {MANIFEST}: expected a saved synthmed generator.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}.")
    return manifest


def load_weights(folder: Path, models: nn.ModuleDict) -> None:
    """Load every module's safetensors weights into ``models`` (strict: names and shapes must match)."""
    for name, module in models.items():
        path = weights_file(folder, name, module)
        if not path.is_file():
            raise CheckpointError(f"{folder}: weights of module {name!r} are missing ({path.name}).")
        module.load_state_dict(load_file(path), strict=True)


def weights_digest(models: nn.Module) -> str:
    """A short hash of every parameter and buffer: identifies a checkpoint in provenance."""
    parts = (part for name, tensor in sorted(models.state_dict().items())
             for part in (name.encode(), tensor.detach().cpu().contiguous().numpy().tobytes()))
    return sha256_bytes(parts)[:16]


# ------------------------------------------------------------------ training helpers


def adam_per_module(models: nn.ModuleDict, names: tuple[str, ...], learning_rate: float,
                    betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
    """One Adam optimiser per named module (GANs: generator and discriminator)."""
    return {name: torch.optim.Adam(models[name].parameters(), lr=learning_rate, betas=betas) for name in names}


def apply_gradients(optimizer: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module, step: Any,
                    *, clip: bool = True) -> None:
    """zero_grad, ``step.backward(loss)``, optional ``step.clip`` of ``module``, optimiser step."""
    optimizer.zero_grad(set_to_none=True)
    step.backward(loss)
    if clip:
        step.clip(module.parameters())
    optimizer.step()


def bce_to(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of ``logits`` against a constant ``target`` (1 real, 0 fake), in float32."""
    logits = logits.float()
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; its previous train/eval mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    with torch.no_grad():  # not a decorator: that would import torch with this module
        ema_params = [p for p in ema.parameters()]
        model_params = [p.detach().to(p.dtype) for p in model.parameters()]
        torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
        for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2016: conv weights ~ N(0, 0.02), batch-norm weights ~ N(1, 0.02), bias 0.

    Uses the global torch RNG: call inside ``torch.random.fork_rng`` after ``manual_seed``.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.BatchNorm3d, nn.InstanceNorm3d)) \
            and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
