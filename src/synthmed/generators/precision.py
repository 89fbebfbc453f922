"""What ``auto`` mixed precision means on this machine, for training and for sampling.

bf16 on CUDA, and on x86 CPUs with AMX-BF16 (Intel Xeon since Sapphire Rapids): there oneDNN
runs bf16 convolutions and matrix products on the AMX tiles: on 2 cores conf/base's DDPM and
DCGAN train 1.7-2 times faster than in fp32, its Pix2Pix 1.2 times, and DDIM samples twice as
fast (benchmarks/RESULTS.md, "bf16 on CPUs with AMX"). fp32 on every other CPU: without native
bf16 instructions autocast converts back and forth and gains nothing. The training log says
when ``auto`` chose bf16 on the CPU, and the MLflow run records what training ran in as
``<prefix>.resolved.mixed_precision`` (``ddpm.resolved...``, ``study_inpainting.diffusion.resolved...``;
the profile's own parameter, e.g. ``ddpm.training.mixed_precision``, says ``auto``); the sampling
provenance records the precision of every row. ``no`` / ``fp32`` in the profile turn it off.
"""

from __future__ import annotations

from functools import lru_cache

from synthmed.core.lazy import lazy_import

torch = lazy_import("torch")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices in hardware (AMX-BF16), as torch reports it."""
    return bool(torch.cpu.get_capabilities().get("amx_bf16", False))


def auto_bf16(device_type: str) -> bool:
    """Whether ``auto`` precision runs the networks in bf16 on a device of this type."""
    return device_type == "cuda" or (device_type == "cpu" and cpu_has_native_bf16())
