"""Mixed precision: the models' matmuls in bfloat16, everything geometric in the run's dtype.

``precision="bf16-mixed"`` runs a forward pass (and so its backward) under
``torch.autocast(device, torch.bfloat16)``: every Linear, addmm and matmul takes bfloat16
operands (the weights stay float32 and are cast per pass), their outputs and the SiLUs after
them are bfloat16. What stays in the batch's dtype, because the models are written for it
(`fastegnn_md.models.blocks`, `fastegnn_md.models.kernels`):

* positions, velocities and every coordinate update (x_i - x_j, x_i - z_c, their squared
  lengths, the sums of Eqs. 6 and 8): a bfloat16 coordinate would carry ~3 significant digits;
* every sum over neighbours, channels or graphs (`Segments.sum_into` casts the messages to the
  accumulator's dtype first), so a mean over 60 neighbours is not rounded at every addition.

Only the coefficients that multiply those vectors (phi_x, phi_v, phi_Z, the gravity head) carry
bfloat16's ~0.4 % relative rounding, so the output is E(3)-equivariant up to that rounding,
not to float32 round-off. What it costs in accuracy and gains in time is measured in
``benchmarks/speed.py --precision bf16-mixed`` (benchmarks/RESULTS.md): it can pay only where the
CPU multiplies bfloat16 natively (AVX-512-BF16 or AMX; on CUDA, compute capability 8.0 or newer),
and not on every such CPU (faster on an AVX-512-BF16 EPYC, slower on an AVX-512-BF16 Xeon
without AMX, whose oneDNN bfloat16 matmuls ran at 0.6-0.8x its float32 rate).

Training keeps float32 master weights and float32 losses; the optimizer never sees bfloat16.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import ContextManager

import torch

#: "full": every operation in the batch's dtype (the default). "bf16-mixed": see the module docstring.
PRECISIONS = ("full", "bf16-mixed")


def check_precision(precision: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> str:
    """``precision`` if it is one of `PRECISIONS` and can run on ``device`` with ``dtype`` data;
    otherwise a ValueError that says why. "bf16-mixed" needs float32 data (a float64 run asks for
    its precision on purpose) and a device that has autocast (CPU, CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "full":
        return precision
    if dtype != torch.float32:
        raise ValueError(f"precision bf16-mixed needs float32 data, got {str(dtype).replace('torch.', '')}")
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"precision bf16-mixed runs on cpu or cuda, not {device_type}")
    return precision


def precision_context(precision: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> ContextManager:
    """The context a model's forward pass runs in for ``precision`` on ``device``
    (`check_precision`'s errors otherwise).

    "full" is a no-op context. "bf16-mixed" is autocast to bfloat16 on the device's type.
    """
    if check_precision(precision, device, dtype) == "full":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@lru_cache(maxsize=None)
def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware (so bf16-mixed can be faster).

    CPU: the x86 flags avx512_bf16 or amx_bf16 in /proc/cpuinfo (elsewhere: False, i.e. unknown).
    CUDA: ``torch.cuda.is_bf16_supported()``.
    """
    if torch.device(device).type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False
