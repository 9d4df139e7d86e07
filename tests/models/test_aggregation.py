"""The segment sums the models aggregate with, and their contract on edge and node order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fastegnn_md import collate
from fastegnn_md.models import available_models
from fastegnn_md.models.kernels import Segments

from symmetry_helpers import DEVICE, close, make_pairs, on_device, perturbed_model  # tests/models/


@pytest.mark.parametrize(
    "index",
    [[1, 1, 1, 2, 5, 5], [5, 1, 1, 5, 2, 1], [4, 4, 4, 4, 4, 4]],
    ids=["sorted with gaps", "unsorted, repeated runs", "one run"],
)
def test_segment_sum_equals_index_add_and_has_its_gradient(index: list[int]) -> None:
    index = torch.tensor(index, device=DEVICE)
    values = torch.randn(6, 4, dtype=torch.float64).to(DEVICE).requires_grad_()
    start = torch.randn(7, 4, dtype=torch.float64).to(DEVICE)

    expected = start.clone().index_add_(0, index, values.detach())
    got = Segments(index).sum_into(start.clone(), values.detach())  # inference path: embedding_bag
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)

    weights = torch.randn(7, 4, dtype=torch.float64).to(DEVICE)
    (grad,) = torch.autograd.grad((Segments(index).sum_into(start.clone(), values) * weights).sum(), values)
    torch.testing.assert_close(grad, weights[index], rtol=0, atol=0)


def test_segment_sum_of_no_rows_leaves_out_unchanged() -> None:
    out = torch.ones(3, 2, device=DEVICE)
    no_rows = Segments(torch.zeros(0, dtype=torch.long, device=DEVICE)).sum_into(out, torch.zeros(0, 2, device=DEVICE))
    assert torch.equal(no_rows, torch.ones(3, 2, device=DEVICE))


@pytest.mark.parametrize("name", available_models())
def test_edge_order_of_the_batch_does_not_change_the_result(name: str) -> None:
    """`collate` sorts edges by receiver, which makes the segment sums fast; a batch whose edges
    (and their features) arrive in another order gives the same prediction."""
    rng = np.random.default_rng(11)
    batch = on_device(collate(make_pairs(rng, sizes=(12, 7)), cutoff=2.5, dtype=torch.float64))
    assert batch.num_edges > 20
    order = torch.as_tensor(rng.permutation(batch.num_edges), device=DEVICE)
    shuffled = dataclasses.replace(batch, edge_index=batch.edge_index[:, order], edge_features=batch.edge_features[order])
    assert bool((shuffled.edge_index[0, 1:] < shuffled.edge_index[0, :-1]).any())

    model = perturbed_model(name)
    expected, got = model(batch), model(shuffled)
    close(got.positions, expected.positions)


@pytest.mark.parametrize("chunk", [7, 16384], ids=["chunks split receivers", "one chunk"])
@pytest.mark.parametrize("name", available_models())
def test_inference_path_matches_the_autograd_path(name: str, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without autograd the models gather and sum with embedding_bag (`Segments`,
    `EdgeChunk.gather_pairs`); with it, with index_select/index_add_. The symmetry tests run
    the autograd path, so this pins the inference path to it: several graphs, and chunks whose
    borders fall inside one receiver's run of edges."""
    from fastegnn_md.models import kernels

    monkeypatch.setattr(kernels, "EDGE_CHUNK", chunk)
    rng = np.random.default_rng(12)
    batch = on_device(collate(make_pairs(rng, sizes=(15, 9, 1)), cutoff=2.5, dtype=torch.float64))
    model = perturbed_model(name)
    with_grad = model(batch)
    assert with_grad.positions.requires_grad or name == "linear"
    with torch.inference_mode():
        without = model(batch)
    close(without.positions, with_grad.positions)
    if with_grad.virtual_positions is not None:
        close(without.virtual_positions, with_grad.virtual_positions)
