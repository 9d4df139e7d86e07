"""Replay only the dense arithmetic of one forward pass: an empirical floor for `speed.py`.

`record_dense_ops(fn)` runs ``fn`` once under a dispatch mode and records every matmul
(linear, matmul, addmm, addmm_, mm, bmm) and SiLU call with its argument shapes and strides, in order.
`DenseReplay.run()` then issues exactly those PyTorch calls again on fixed random tensors of
the same shapes (one buffer per shape and role, so inputs stay as warm in cache as they can be): no
gathers, scatters, concatenations, additions or Python bookkeeping. The replay's time is what
this model's matmuls and activations cost at PyTorch's kernel rates on this machine, called
one by one as eager PyTorch must call them; no reorganisation of the same model in eager
PyTorch can go below it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# linear and matmul appear whole under inference_mode (their decomposition into addmm/mm runs
# below the mode), so they are recorded as such and nothing is counted twice.
DENSE_OPS = {
    aten.linear.default, aten.matmul.default, aten.addmm.default, aten.addmm_.default,
    aten.mm.default, aten.bmm.default, aten.silu.default, aten.silu_.default,
}
INPLACE_OPS = {aten.addmm_.default, aten.silu_.default}


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in DENSE_OPS:
            spec = tuple(_spec(a) for a in args)
            self.calls.append((func, spec, {k: _spec(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def _spec(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), tuple(value.stride()), value.dtype)
    return value


class DenseReplay:
    """The recorded dense calls of one forward pass, ready to be issued again."""

    def __init__(self, calls: list[tuple[Any, tuple, dict]]) -> None:
        buffers: dict[tuple, torch.Tensor] = {}

        def materialise(spec: Any, target_of: Any = None) -> Any:
            if not (isinstance(spec, tuple) and spec and spec[0] == "tensor"):
                return spec
            key = (spec, target_of)
            if key not in buffers:
                _, shape, stride, dtype = spec
                values = torch.rand(max(1, _storage_size(shape, stride)), dtype=dtype)
                if target_of is aten.silu_.default:
                    # Repeated in-place SiLU must not drift into denormals (which are many
                    # times slower): near x = 12, silu(x) = x within 1e-4 per call.
                    values = values * 4 + 10
                else:
                    values = values * 2 - 1  # matmul inputs in [-1, 1), never mutated
                buffers[key] = values.as_strided(shape, stride)
            return buffers[key]

        self.calls = []
        for func, args, kwargs in calls:
            # An in-place op's target gets its own buffer, so it never feeds other calls.
            target = func if func in INPLACE_OPS else None
            materialised = tuple(materialise(a, target if i == 0 else None) for i, a in enumerate(args))
            self.calls.append((func, materialised, {k: materialise(v) for k, v in kwargs.items()}))

    def run(self) -> None:
        for func, args, kwargs in self.calls:
            func(*args, **kwargs)


def _storage_size(shape: tuple, stride: tuple) -> int:
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(shape, stride))


def record_dense_ops(fn: Callable[[], Any]) -> DenseReplay:
    """Run ``fn`` once and return the replay of its matmul and SiLU calls."""
    recorder = _Recorder()
    with recorder:
        fn()
    return DenseReplay(recorder.calls)
