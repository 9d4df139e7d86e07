"""The fast FastEGNN / EGNN against the plain reference of the paper's Eqs. 2-9
(`fastegnn_md.models.reference`), on identical weights, in float64.

Every comparison checks the outputs (positions, virtual positions; with and without autograd,
since the fast path gathers and sums differently in the two) and the gradients of a scalar loss
with respect to every parameter and to the input positions and velocities. Float64 round-off is
~1e-15 relative; the tolerance is 1e-10 of each tensor's magnitude. The last two tests show the
comparison can fail: one weight changed in the reference's copy breaks the outputs, and a
backward pass with the right values but a wrong derivative breaks only the gradients.

Models and batches run on ``FASTEGNN_TEST_DEVICE`` (default cpu; `symmetry_helpers.DEVICE`);
`collate` and `reference_edges` themselves are numpy code and are checked on the CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch

from fastegnn_md import FramePair, collate
from fastegnn_md.graph import GraphBatch
from fastegnn_md.models import ModelOutput, build_model, kernels
from fastegnn_md.models import reference
from fastegnn_md.models.reference import ReferenceModel, reference_edges, reference_forward

sys.path.insert(0, str(Path(__file__).parent / "models"))
from symmetry_helpers import (  # noqa: E402  (tests/models/, the shared float64 helpers and test device)
    DEVICE, RERUN_TOL, close, make_pairs, on_device,
)

# name -> (registry model, hyperparameters, length scale)
VARIANTS = {
    "fastegnn": ("fastegnn", {}, 1.0),
    "weighted start": ("fastegnn", {"virtual_init": "weighted"}, 1.0),
    "one virtual node": ("fastegnn", {"virtual_nodes": 1}, 1.0),
    "global nodes": ("global_nodes", {}, 1.0),
    "gravity and length scale": ("fastegnn", {"gravity_axis": (0.3, -1.0, 0.2)}, 2.5),
    "egnn": ("egnn", {}, 1.0),
    "time and length scale": ("fastegnn", {"time_scale": 0.075}, 2.5),
}

# name -> (graph sizes, node attribute columns, cutoff, drop rate p)
GRAPHS = {
    "one graph, all pairs": ((8,), 1, None, 0.0),
    "three graphs, cutoff, isolated node": ((11, 6, 1), 1, 2.5, 0.0),
    "cutoff, p=0.5, two attributes": ((12, 9), 2, 2.5, 0.5),
    "all pairs, p=0.75": ((9, 5), 1, None, 0.75),
    "all edges dropped": ((10, 4), 2, 2.5, 1.0),
}


def make_model(name: str, attrs: int = 1, seed: int = 0, length_scale: float = 1.0, **hparams) -> torch.nn.Module:
    """A float64 model with weights of ordinary size (`symmetry_helpers.perturbed_model`'s recipe,
    with the attribute width and C free): the coordinate heads' 1e-3 start would otherwise let
    a wrong term hide below the tolerance."""
    torch.manual_seed(seed)
    settings = dict(node_features=1 + attrs, edge_features=1 + attrs, hidden=16, layers=3, virtual_nodes=3)
    settings.update(hparams)
    model = build_model(name, **settings).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    if length_scale != 1.0:
        model.set_length_scale(length_scale)
    return model.to(DEVICE)  # weights drawn on the CPU: the same on every device


def make_graphs(seed: int, sizes, attrs: int = 1) -> list[FramePair]:
    """`make_pairs`' graphs (positions spread 1.5, random velocities) with ``attrs`` attribute
    columns and targets one noisy step away."""
    rng = np.random.default_rng(seed)
    pairs = make_pairs(rng, sizes)
    out = []
    for p in pairs:
        n = p.num_nodes
        node_attrs = p.node_attrs if attrs == 1 else rng.normal(size=(n, attrs))
        target = p.positions + 0.1 * p.velocities + 0.01 * rng.normal(size=(n, 3))
        out.append(FramePair(p.positions, p.velocities, target, node_attrs))
    return out


Forward = Callable[[GraphBatch], ModelOutput]


def outputs_and_gradients(forward: Forward, model: torch.nn.Module, batch: GraphBatch):
    """(outputs, gradients) of ``forward`` on ``batch``; gradients of sum(x'^2) + sum(z^2) with
    respect to the input positions and velocities and to every named parameter of ``model``
    (None where the loss does not depend on it)."""
    positions = batch.positions.clone().requires_grad_()
    velocities = batch.velocities.clone().requires_grad_()
    out = forward(dataclasses.replace(batch, positions=positions, velocities=velocities))
    loss = out.positions.square().sum()
    if out.virtual_positions is not None:
        loss = loss + out.virtual_positions.square().sum()
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(loss, [positions, velocities, *params], allow_unused=True)
    with torch.no_grad():  # the fast path's inference kernels (embedding bags, in-place SiLU)
        inference = forward(batch)
    outputs = {
        "positions": out.positions.detach(),
        "virtual positions": None if out.virtual_positions is None else out.virtual_positions.detach(),
        "positions (no grad)": inference.positions,
        "virtual positions (no grad)": inference.virtual_positions,
    }
    return outputs, dict(zip(("input positions", "input velocities") + names, grads))


def assert_same_function(
    model: torch.nn.Module, batch: GraphBatch, reference_model: Optional[torch.nn.Module] = None
) -> None:
    """Fast ``model`` and the reference (on ``reference_model``'s weights, default the same
    model) agree on outputs, then on every gradient, within float64 round-off."""
    reference_model = model if reference_model is None else reference_model
    fast_out, fast_grads = outputs_and_gradients(model, model, batch)
    ref_out, ref_grads = outputs_and_gradients(lambda b: reference_forward(reference_model, b), reference_model, batch)
    for key, expected in ref_out.items():
        got = fast_out[key]
        assert (got is None) == (expected is None), key
        if expected is not None:
            assert got.shape == expected.shape, key
            close(got, expected)
    assert fast_grads.keys() == ref_grads.keys()
    for key, expected in ref_grads.items():
        got = fast_grads[key]
        # Parameters no output depends on (the last layer's h and s updates) have no gradient in
        # either; a block the fast path skips (edges of an edgeless batch) has a zero one here.
        if got is None or expected is None:
            other = expected if got is None else got
            assert other is None or not other.any(), f"gradient of {key}: only one implementation has one"
            continue
        try:
            close(got, expected)
        except AssertionError as error:
            raise AssertionError(f"gradient of {key} differs: {error}") from None


@pytest.mark.parametrize("graphs", GRAPHS, ids=list(GRAPHS))
@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_fast_model_equals_reference(variant: str, graphs: str) -> None:
    name, hparams, scale = VARIANTS[variant]
    sizes, attrs, cutoff, drop_rate = GRAPHS[graphs]
    pairs = make_graphs(1, sizes, attrs)
    if scale != 1.0:  # same graph, in a unit L times smaller
        pairs = [FramePair(p.positions * scale, p.velocities * scale, p.target_positions * scale, p.node_attrs)
                 for p in pairs]
        cutoff = None if cutoff is None else cutoff * scale
    batch = on_device(collate(pairs, cutoff=cutoff, drop_rate=drop_rate, dtype=torch.float64))
    assert (batch.num_edges == 0) == (drop_rate == 1.0)
    model = make_model(name, attrs, length_scale=scale, **hparams)
    assert_same_function(model, batch)


@pytest.mark.parametrize("targets", [True, False], ids=["targets", "no targets"])
@pytest.mark.parametrize("name", ["fastegnn", "egnn"])
def test_moving_mask(name: str, targets: bool) -> None:
    """Walls (moving False) in two of three graphs; the third has no mask (collate: all move)."""
    pairs = make_graphs(2, (9, 7, 5))
    masks = [np.arange(9) >= 3, np.arange(7) % 3 != 0, None]
    pairs = [dataclasses.replace(p, moving=m) for p, m in zip(pairs, masks)]
    batch = on_device(collate(pairs, cutoff=2.5, dtype=torch.float64))
    if not targets:
        batch = dataclasses.replace(batch, target_positions=None)
    model = make_model(name)
    assert_same_function(model, batch)
    with torch.no_grad():
        out = reference_forward(model, batch).positions
    fixed = ~batch.moving
    assert int(fixed.sum()) == 3 + 3
    expected = batch.target_positions if targets else batch.positions
    assert torch.equal(out[fixed], expected[fixed])
    assert (out[~fixed] - expected[~fixed]).abs().max() > 1e-3  # moving nodes are predicted


@pytest.mark.parametrize("name", ["fastegnn", "egnn"])
def test_chunked_fast_path_equals_reference(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 edges or node-channel rows: borders inside a receiver's edges and a graph's nodes."""
    monkeypatch.setattr(kernels, "EDGE_CHUNK", 7)
    batch = on_device(collate(make_graphs(3, (24, 13)), cutoff=2.5, drop_rate=0.25, dtype=torch.float64))
    assert batch.num_edges > 50
    assert_same_function(make_model(name, virtual_init="weighted") if name == "fastegnn" else make_model(name), batch)


def test_batched_fast_model_equals_reference_on_each_graph_alone() -> None:
    """Batching: the fast model on three graphs at once is the reference on each graph by itself."""
    pairs = make_graphs(4, (10, 6, 1))
    model = make_model("fastegnn", virtual_init="weighted")
    with torch.no_grad():
        together = model(on_device(collate(pairs, cutoff=2.5, dtype=torch.float64)))
        alone = [reference_forward(model, on_device(collate([p], cutoff=2.5, dtype=torch.float64))) for p in pairs]
    close(together.positions, torch.cat([a.positions for a in alone]))
    close(together.virtual_positions, torch.cat([a.virtual_positions for a in alone]))


def test_reference_module_shares_the_fast_models_parameters() -> None:
    model = make_model("fastegnn")
    wrapped = ReferenceModel(model)
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    batch = on_device(collate(make_graphs(5, (7,)), cutoff=2.5, dtype=torch.float64))
    wrapped(batch).positions.square().sum().backward()
    assert model.layers[0].virtual_message.gram.weight.grad is not None
    with pytest.raises(TypeError, match="RadialField"):
        ReferenceModel(build_model("rf", edge_features=2))


@pytest.mark.parametrize(
    "cutoff, drop_rate", [(None, 0.0), (None, 0.7), (2.5, 0.0), (2.5, 0.3), (2.5, 0.5), (2.5, 1.0)]
)
def test_collated_edges_are_the_papers(cutoff: Optional[float], drop_rate: float) -> None:
    """`collate`'s edges and distance features against `reference_edges` (brute force), per graph:
    the same number, all within the cutoff, the same lengths kept (so the same edges up to ties
    between equally long ones, e.g. the two directions of a pair)."""
    pairs = make_graphs(6, (14, 9, 1))
    batch = collate(pairs, cutoff=cutoff, drop_rate=drop_rate, dtype=torch.float64)
    edges = batch.edge_index.numpy()
    x = batch.positions.numpy()
    np.testing.assert_allclose(batch.edge_features[:, 0].numpy(), np.linalg.norm(x[edges[0]] - x[edges[1]], axis=1),
                               rtol=1e-14)
    np.testing.assert_allclose(batch.node_features[:, 0].numpy(), np.linalg.norm(batch.velocities.numpy(), axis=1),
                               rtol=1e-14)
    offset = 0
    for p in pairs:
        n = p.num_nodes
        mine = edges[:, (edges[0] >= offset) & (edges[0] < offset + n)] - offset
        assert ((mine[1] >= 0) & (mine[1] < n)).all(), "edge across graphs"
        assert (mine[0] != mine[1]).all(), "self loop"
        expected = reference_edges(p.positions, cutoff, drop_rate)
        assert mine.shape == expected.shape
        length = lambda e: np.sort(np.linalg.norm(p.positions[e[0]] - p.positions[e[1]], axis=1))  # noqa: E731
        np.testing.assert_array_equal(length(mine), length(expected))
        if cutoff is not None:
            assert (length(mine) < cutoff).all()
        offset += n


LIVE_EXCEPT = ("layers.2.node_update.", "layers.2.virtual_update.")  # the last layer's h, s updates


def test_every_parameter_the_output_depends_on_is_read_by_the_reference() -> None:
    """Changing any one parameter tensor (in a copy) moves the reference's output far beyond the
    tolerance, except the last layer's h and s updates, which neither implementation uses: so
    the equality tests above would see any weight the reference left out or misplaced."""
    model = make_model("fastegnn", virtual_init="weighted", gravity_axis=(0.0, 0.0, -1.0))
    batch = on_device(collate(make_graphs(7, (9, 5)), cutoff=2.5, drop_rate=0.25, dtype=torch.float64))
    with torch.no_grad():
        base = reference_forward(model, batch)
        for name, _ in model.named_parameters():
            changed = copy.deepcopy(model)
            param = dict(changed.named_parameters())[name]
            param.add_(1e-3 * torch.randn_like(param))
            out = reference_forward(changed, batch)
            shift = max(float((out.positions - base.positions).abs().max()),
                        float((out.virtual_positions - base.virtual_positions).abs().max()))
            if name.startswith(LIVE_EXCEPT):
                # Exactly 0 on the CPU; on CUDA the reference's atomic sums may reorder (RERUN_TOL).
                assert shift <= RERUN_TOL, name
                if RERUN_TOL == 0.0:
                    assert torch.equal(changed(batch).positions, model(batch).positions), name
                else:
                    close(changed(batch).positions, model(batch).positions)
            else:
                assert shift > 1e-7, f"{name}: the reference does not read it"


def test_comparison_fails_when_one_weight_differs() -> None:
    batch = on_device(collate(make_graphs(8, (9, 5)), cutoff=2.5, dtype=torch.float64))
    model = make_model("fastegnn")
    assert_same_function(model, batch)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.layers[1].virtual_message.gram.weight[0, 0] += 1e-6
    with pytest.raises(AssertionError):
        assert_same_function(model, batch, reference_model=changed)


def test_gradient_comparison_fails_on_a_wrong_derivative(monkeypatch: pytest.MonkeyPatch) -> None:
    """SiLU with its exact values but derivative 1 in the reference: outputs still agree, the
    gradients do not."""
    batch = on_device(collate(make_graphs(9, (9, 5)), cutoff=2.5, dtype=torch.float64))
    model = make_model("fastegnn")

    def straight_through_silu(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(t.detach()) + (t - t.detach())

    monkeypatch.setattr(reference, "_silu", straight_through_silu)
    with pytest.raises(AssertionError, match="gradient of"):
        assert_same_function(model, batch)
