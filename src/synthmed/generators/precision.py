"""What ``auto`` mixed precision means on this machine, for training and for sampling.

bf16 on CUDA, and on x86 CPUs with AMX-BF16 (Intel Xeon since Sapphire Rapids): there oneDNN
runs bf16 convolutions and matrix products on the AMX tiles, and conf/base's generators train
1.7-2.1 times faster than in fp32 on 2 cores (benchmarks/RESULTS.md, "bf16 on CPUs with AMX").
fp32 on every other CPU: without native bf16 instructions autocast converts back and forth and
gains nothing. The choice is logged and recorded (the sampling provenance's ``precision``
column, the training run's ``mixed_precision`` parameter), and ``no`` / ``fp32`` in the profile
turns it off.
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
