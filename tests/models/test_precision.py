"""bf16-mixed precision (`fastegnn_md.models.precision`): matmuls in bfloat16, geometry and sums
in float32.

The fast models under bf16-mixed are compared with the float64 reference of the paper's
equations (`fastegnn_md.models.reference`) on the same weights: displacements and gradients
agree to bfloat16's rounding (~0.4 % per operation), positions stay float32, and the symmetry
(rotations, a reflection, translations) holds to that rounding. bfloat16 kernels on other
devices than the CPU are exercised by ``benchmarks/device_check.sh``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fastegnn_md import collate
from fastegnn_md.models import kernels
from fastegnn_md.models.kernels import Segments
from fastegnn_md.models.precision import PRECISIONS, check_precision, native_bf16, precision_context
from fastegnn_md.models.reference import reference_forward

from symmetry_helpers import DEVICE, make_pairs, on_device, perturbed_model

MODELS = {
    "fastegnn": ("fastegnn", {}),
    "weighted start, gravity": ("fastegnn", {"virtual_init": "weighted", "gravity_axis": (0.0, -1.0, 0.0)}),
    "global nodes": ("global_nodes", {}),
    "egnn": ("egnn", {}),
}
# bfloat16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2 %); three layers of these
# perturbed models (weights far from their tiny start, which amplifies) give 0.5-2.5 % on the
# displacement. A mistake in the wiring is larger: one coordinate head off by half is 14 %.
DISPLACEMENT_TOL = 0.05
# Weight gradients come out of bfloat16 matmuls (rounded once more); the global-nodes model's
# reach 5.7 %. A wrong derivative is off by its whole size.
GRADIENT_TOL = 0.1


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return float(torch.linalg.vector_norm(actual - expected) / torch.linalg.vector_norm(expected))


def batch_of(seed: int = 0, sizes=(40, 25, 1), cutoff=2.5, dtype=torch.float32):
    rng = np.random.default_rng(seed)
    pairs = make_pairs(rng, sizes)
    pairs = [dataclasses.replace(p, target_positions=p.positions + 0.1 * p.velocities) for p in pairs]
    return on_device(collate(pairs, cutoff=cutoff, dtype=dtype)), pairs


def float32_and_float64(name: str, hparams: dict):
    model64 = perturbed_model(name, **hparams)
    model32 = perturbed_model(name, **hparams).float()
    return model32, model64


def test_check_precision_names_the_choices() -> None:
    assert check_precision("bf16-mixed") == "bf16-mixed"
    assert PRECISIONS == ("full", "bf16-mixed")
    with pytest.raises(ValueError, match="full, bf16-mixed"):
        check_precision("fp16")


def test_bf16_mixed_needs_float32_data() -> None:
    with pytest.raises(ValueError, match="float32 data, got float64"):
        precision_context("bf16-mixed", "cpu", torch.float64)
    with pytest.raises(ValueError, match="cpu or cuda"):
        precision_context("bf16-mixed", "meta")


def test_full_precision_changes_nothing() -> None:
    model32, _ = float32_and_float64("fastegnn", {})
    batch, _ = batch_of()
    with torch.no_grad():
        plain = model32(batch).positions
        with precision_context("full", DEVICE):
            again = model32(batch).positions
    assert torch.equal(plain, again)


@pytest.mark.parametrize("chunk", [None, 64], ids=["one chunk", "edge chunks of 64"])
@pytest.mark.parametrize("variant", list(MODELS))
def test_bf16_mixed_matches_the_float64_reference(variant: str, chunk, monkeypatch) -> None:
    """Outputs (with and without autograd: the inference path gathers and sums differently) and
    the gradient of every parameter, bf16-mixed float32 model against the float64 reference."""
    if chunk is not None:
        monkeypatch.setattr(kernels, "EDGE_CHUNK", chunk)
    name, hparams = MODELS[variant]
    model32, model64 = float32_and_float64(name, hparams)
    batch32, _ = batch_of()
    batch64 = batch32.to(dtype=torch.float64)

    expected = reference_forward(model64, batch64)
    (expected.positions.square().sum()).backward()
    with precision_context("bf16-mixed", DEVICE):
        out = model32(batch32)
    assert out.positions.dtype == torch.float32  # coordinates are never bfloat16
    if out.virtual_positions is not None:
        assert out.virtual_positions.dtype == torch.float32
    out.positions.square().sum().backward()
    with torch.inference_mode(), precision_context("bf16-mixed", DEVICE):
        inference = model32(batch32)

    moved = expected.positions - batch64.positions
    assert relative(out.positions - batch32.positions, moved) < DISPLACEMENT_TOL
    assert relative(inference.positions - batch32.positions, moved) < DISPLACEMENT_TOL
    if expected.virtual_positions is not None:
        assert relative(out.virtual_positions, expected.virtual_positions) < DISPLACEMENT_TOL
    grads32 = {n: p.grad for n, p in model32.named_parameters() if p.grad is not None}
    grads64 = {n: p.grad for n, p in model64.named_parameters() if p.grad is not None}
    assert grads32.keys() == grads64.keys()
    flat32 = torch.cat([grads32[n].flatten() for n in sorted(grads32)])
    flat64 = torch.cat([grads64[n].flatten() for n in sorted(grads64)])
    assert relative(flat32, flat64) < GRADIENT_TOL


def test_the_comparison_can_fail() -> None:
    """The last layer's edge coordinate head 1.5 times too strong in the float32 copy moves the
    displacement past the tolerance."""
    model32, model64 = float32_and_float64("fastegnn", {})
    with torch.no_grad():
        model32.layers[-1].edges.coord_head.out.mul_(1.5)
    batch32, _ = batch_of()
    batch64 = batch32.to(dtype=torch.float64)
    with torch.no_grad(), precision_context("bf16-mixed", DEVICE):
        out = model32(batch32)
    expected = reference_forward(model64, batch64)
    assert relative(out.positions - batch32.positions, expected.positions - batch64.positions) > DISPLACEMENT_TOL


@pytest.mark.parametrize("variant", ["fastegnn", "egnn"])
def test_bf16_mixed_is_equivariant_to_its_rounding(variant: str) -> None:
    """Rotation with a reflection, then a translation of 100 box units: the transformed input's
    displacement is the transformed displacement to bfloat16 rounding. The translation would
    cost every digit if a coordinate were ever held in bfloat16 (100 + 0.1 rounds to 100)."""
    name, hparams = MODELS[variant]
    model32, _ = float32_and_float64(name, hparams)
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q if np.linalg.det(q) < 0 else -q  # include a reflection
    t = np.array([100.0, -60.0, 30.0])
    batch, pairs = batch_of(seed=1)
    moved_pairs = [dataclasses.replace(p, positions=p.positions @ q + t, velocities=p.velocities @ q,
                                       target_positions=p.target_positions @ q + t) for p in pairs]
    moved = on_device(collate(moved_pairs, cutoff=2.5, dtype=torch.float32))
    with torch.no_grad(), precision_context("bf16-mixed", DEVICE):
        dx = model32(batch).positions - batch.positions
        dx_moved = model32(moved).positions - moved.positions
    q_t = torch.as_tensor(q, dtype=torch.float32, device=dx.device)
    assert relative(dx_moved, dx @ q_t) < DISPLACEMENT_TOL


@pytest.mark.parametrize("grad", [False, True], ids=["embedding bag", "index_add_"])
def test_segment_sums_of_bfloat16_rows_accumulate_in_the_output_dtype(grad: bool) -> None:
    """512 bfloat16 rows per run summed into float32: only the inputs' (and at most the sum's)
    rounding, not a rounding per addition (a bfloat16 running sum of 512 terms near 1 is off by
    percents: its spacing at 512 is 2)."""
    torch.manual_seed(0)
    index = torch.arange(4).repeat_interleave(512)
    values = (torch.rand(index.shape[0], 3) + 0.5).bfloat16().requires_grad_(grad)
    out = Segments(index).sum_into(torch.zeros(4, 3), values)
    assert out.dtype == torch.float32
    expected = torch.zeros(4, 3, dtype=torch.float64).index_add_(0, index, values.detach().double())
    assert relative(out.detach(), expected) < 5e-3
    sequential = torch.zeros(4, 3, dtype=torch.bfloat16)
    for row in range(index.shape[0]):  # what a bfloat16 accumulator would do
        sequential[index[row]] += values.detach()[row]
    assert relative(sequential, expected) > 5e-3  # so the test above can tell the two apart


def test_native_bf16_is_a_boolean() -> None:
    assert isinstance(native_bf16("cpu"), bool)


@pytest.mark.parametrize("variant", list(MODELS))
def test_float32_inference_kernels_match_the_float64_reference(variant: str, monkeypatch) -> None:
    """Inference (no autograd) takes the fused Linear+SiLU kernel (`blocks.linear_act`) and the
    embedding-bag sums on float32; its positions equal the float64 reference's to float32
    round-off, and the fused kernel is really what ran."""
    from fastegnn_md.models import blocks

    calls = []
    if blocks._FUSED_LINEAR is not None:
        fused = blocks._FUSED_LINEAR
        monkeypatch.setattr(blocks, "_FUSED_LINEAR", lambda *args: calls.append(1) or fused(*args))
    monkeypatch.setattr(kernels, "EDGE_CHUNK", 64)
    name, hparams = MODELS[variant]
    model32, model64 = float32_and_float64(name, hparams)
    batch32, _ = batch_of()
    with torch.inference_mode():
        out = model32(batch32)
    expected = reference_forward(model64, batch32.to(dtype=torch.float64))
    assert relative(out.positions - batch32.positions, expected.positions - batch32.positions.double()) < 1e-5
    if out.virtual_positions is not None:
        assert relative(out.virtual_positions, expected.virtual_positions) < 1e-5
    if blocks._FUSED_LINEAR is not None and DEVICE.type == "cpu":
        assert calls, "the fused kernel did not run"


def test_training_never_takes_the_fused_kernel(monkeypatch) -> None:
    """The fused kernel has no backward: with autograd on, `linear_act` is Linear then SiLU."""
    from fastegnn_md.models import blocks

    monkeypatch.setattr(blocks, "_FUSED_LINEAR", lambda *args: pytest.fail("fused kernel under autograd"))
    model32, _ = float32_and_float64("fastegnn", {})
    batch32, _ = batch_of()
    model32(batch32).positions.sum().backward()
    assert all(p.grad is not None for p in model32.layers[0].parameters())


def test_torch_compile_runs_and_matches_the_float64_reference() -> None:
    """``torch.compile(model)`` at inference: Inductor fuses on its own, so `linear_act` leaves the
    oneDNN kernel out of a compiled graph (Inductor cannot lower it); the compiled model's
    positions equal the float64 reference's to float32 round-off."""
    model32, model64 = float32_and_float64("fastegnn", {})
    batch32, _ = batch_of()
    compiled = torch.compile(model32, dynamic=False)
    with torch.inference_mode():
        out = compiled(batch32)
    expected = reference_forward(model64, batch32.to(dtype=torch.float64))
    assert relative(out.positions - batch32.positions, expected.positions - batch32.positions.double()) < 1e-5
    assert relative(out.virtual_positions, expected.virtual_positions) < 1e-5
