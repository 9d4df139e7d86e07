"""Graph construction: radius/full edges, edge dropping, features, validation.

Every property is checked against an independent numpy computation (brute force O(N^2)),
never against the package's own helpers.
"""

from __future__ import annotations

from fractions import Fraction
from math import floor

import numpy as np
import pytest
import torch

from fastegnn_md import FramePair, collate
from fastegnn_md.graph import drop_longest_edges, radius_edges


# ----------------------------------------------------------------------------- helpers
def brute_radius_pairs(x: np.ndarray, r: float) -> set[tuple[int, int]]:
    """All directed (i, j), i != j, with |x_i - x_j| < r, by brute force."""
    n = len(x)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    return {(i, j) for i in range(n) for j in range(n) if i != j and d[i, j] < r}


def as_pairs(edge_index) -> set[tuple[int, int]]:
    e = np.asarray(edge_index)
    pairs = list(zip(e[0].tolist(), e[1].tolist()))
    assert len(pairs) == len(set(pairs)), "duplicate edges"
    return set(pairs)


def make_pair(x: np.ndarray, rng: np.random.Generator, attrs=None) -> FramePair:
    n = len(x)
    if attrs is None:
        attrs = rng.choice([-1.0, 1.0], size=(n, 1))
    return FramePair(x, rng.normal(size=(n, 3)), x + 0.1, attrs)


def split_by_graph(batch, sizes):
    """Per graph: local (2, E_g) edges, after checking no edge crosses graphs."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    e = batch.edge_index.numpy()
    graph_of = np.repeat(np.arange(len(sizes)), sizes)
    assert (graph_of[e[0]] == graph_of[e[1]]).all(), "cross-graph edge"
    out = []
    for g in range(len(sizes)):
        mask = graph_of[e[0]] == g
        out.append(e[:, mask] - offsets[g])
    return out


def expected_keep(p: float, num_edges: int) -> int:
    """floor((1 - p) E) in exact decimal arithmetic (0.9 means 9/10, not its float)."""
    return floor((1 - Fraction(str(p))) * num_edges)


CLOUDS = [
    # (name, positions, cutoff)
    ("n1", np.zeros((1, 3)), 1.0),
    ("n2_close", np.array([[0.0, 0.0, 0.0], [0.3, 0.2, -0.1]]), 1.0),
    ("n2_far", np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]), 1.0),
    ("no_pairs", np.arange(30, dtype=float).reshape(10, 3) * 2.0, 1.0),
    ("duplicates", np.array([[1.0, 2.0, 3.0]] * 3 + [[1.5, 2.0, 3.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]]), 1.0),
] + [(f"random_seed{s}", np.random.default_rng(s).uniform(-2, 2, size=(5 + 7 * s, 3)), 0.5 + 0.4 * s) for s in range(5)]


# ----------------------------------------------------------------------------- radius graph
@pytest.mark.parametrize("name,x,r", CLOUDS, ids=[c[0] for c in CLOUDS])
def test_radius_edges_match_brute_force(name, x, r):
    """radius_edges returns exactly the directed pairs i != j closer than the cutoff."""
    edges = radius_edges(x, r)
    assert edges.dtype == np.int64 and edges.shape[0] == 2
    assert as_pairs(edges) == brute_radius_pairs(x, r)


def test_radius_graph_collate_matches_brute_force_per_graph():
    """collate(cutoff=r) on a batch of differently sized clouds gives each graph's brute-force pairs."""
    rng = np.random.default_rng(7)
    clouds = [c[1] for c in CLOUDS]
    r = 1.1
    batch = collate([make_pair(x, rng) for x in clouds], cutoff=r, dtype=torch.float64)
    sizes = [len(x) for x in clouds]
    for x, local in zip(clouds, split_by_graph(batch, sizes)):
        assert as_pairs(local) == brute_radius_pairs(x, r)
    recv = batch.edge_index[0].numpy()
    assert (np.diff(recv) >= 0).all(), "edge_index[0] must be sorted"


def test_radius_edges_at_exactly_the_cutoff_are_excluded():
    """'Closer than cutoff' is strict: a pair at distance exactly r is not an edge.

    The distances 1.0 and 2.0 are exact in floating point, so this is a well-defined check of
    the boundary convention documented by radius_edges ("closer than cutoff").
    """
    x = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert brute_radius_pairs(x, 1.0) == set()
    got = as_pairs(radius_edges(x, 1.0))
    assert got == set(), f"radius_edges(cutoff=1.0) kept pairs at distance exactly 1.0: {sorted(got)}"


def test_nonpositive_cutoff_is_rejected():
    with pytest.raises(ValueError, match="cutoff"):
        radius_edges(np.zeros((3, 3)), 0.0)


# ----------------------------------------------------------------------------- full graph
def test_fully_connected_batch():
    """cutoff=None: N(N-1) edges per graph, no self loops, no cross-graph edges, receivers sorted."""
    rng = np.random.default_rng(0)
    sizes = [4, 1, 7, 2, 5]
    batch = collate([make_pair(rng.normal(size=(n, 3)), rng) for n in sizes], cutoff=None)
    assert batch.num_edges == sum(n * (n - 1) for n in sizes)
    e = batch.edge_index.numpy()
    assert (e[0] != e[1]).all(), "self loop"
    assert (np.diff(e[0]) >= 0).all(), "edge_index[0] must be sorted"
    for n, local in zip(sizes, split_by_graph(batch, sizes)):
        assert as_pairs(local) == {(i, j) for i in range(n) for j in range(n) if i != j}
    assert batch.batch.tolist() == np.repeat(np.arange(len(sizes)), sizes).tolist()
    assert batch.graph_sizes.tolist() == sizes and batch.num_graphs == len(sizes)


# ----------------------------------------------------------------------------- edge dropping
DROP_RATES = [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]


@pytest.mark.parametrize("p", DROP_RATES)
@pytest.mark.parametrize("cutoff", [None, 1.5], ids=["full", "radius"])
def test_edge_dropping_keeps_the_shortest_floor_count(p, cutoff):
    """Per graph, exactly floor((1-p)E) edges survive and none is longer than a dropped one."""
    rng = np.random.default_rng(11)
    clouds = [rng.uniform(-1.5, 1.5, size=(n, 3)) for n in (10, 3, 1, 7)]
    batch = collate([make_pair(x, rng) for x in clouds], cutoff=cutoff, drop_rate=p, dtype=torch.float64)
    recv = batch.edge_index[0].numpy()
    assert (np.diff(recv) >= 0).all()
    for x, kept in zip(clouds, split_by_graph(batch, [len(x) for x in clouds])):
        all_pairs = {(i, j) for i in range(len(x)) for j in range(len(x)) if i != j}
        candidates = all_pairs if cutoff is None else brute_radius_pairs(x, cutoff)
        kept_set = as_pairs(kept)
        assert kept_set <= candidates
        assert len(kept_set) == expected_keep(p, len(candidates))
        if p == 1.0:
            assert not kept_set
        length = lambda ij: float(np.linalg.norm(x[ij[0]] - x[ij[1]]))  # noqa: E731
        dropped = candidates - kept_set
        if kept_set and dropped:
            assert max(map(length, kept_set)) <= min(map(length, dropped))


def test_edge_dropping_count_for_decimal_rates():
    """drop_longest_edges keeps floor((1-p)E) with p read as a decimal, e.g. p=0.9 of 90 keeps 9."""
    rng = np.random.default_rng(3)
    for num_edges in (1, 2, 3, 7, 10, 90, 100, 9900):
        edges = np.stack([np.arange(num_edges), np.arange(num_edges) + 1]).astype(np.int64)
        lengths = rng.uniform(size=num_edges)
        for p in (0.1, 0.2, 0.3, 0.7, 0.9, 0.95, 0.99):
            kept = drop_longest_edges(edges, lengths, p)
            assert kept.shape[1] == expected_keep(p, num_edges), (num_edges, p)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
@pytest.mark.parametrize("num_nodes", [4, 1], ids=["with_edges", "edgeless"])
def test_out_of_range_drop_rate_raises(p, num_nodes):
    """collate rejects p outside [0, 1] (and NaN) whatever the graph, instead of silently keeping edges."""
    rng = np.random.default_rng(0)
    pair = make_pair(rng.normal(size=(num_nodes, 3)), rng)
    try:
        batch = collate([pair], drop_rate=p)
    except ValueError as exc:
        assert "drop_rate" in str(exc)
    else:
        pytest.fail(f"collate(drop_rate={p}) on a {num_nodes}-node graph returned {batch.num_edges} edges instead of raising ValueError")


def test_drop_longest_edges_rejects_out_of_range_rate():
    edges = np.array([[0, 1], [1, 0]], dtype=np.int64)
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="drop_rate"):
            drop_longest_edges(edges, np.array([1.0, 1.0]), p)


# ----------------------------------------------------------------------------- features
def test_node_and_edge_features_against_numpy():
    """h_i = [|v_i|, a_i]; e_ij = [|x_i - x_j|, a_i * a_j] (charge products ±1, and F=2)."""
    x = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    v = np.array([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0], [-3.0, 0.0, 4.0]])
    q = np.array([[1.0], [-1.0], [-1.0]])
    batch = collate([FramePair(x, v, x, q)], dtype=torch.float64)
    np.testing.assert_array_equal(batch.node_features.numpy(), [[3.0, 1.0], [0.0, -1.0], [5.0, -1.0]])
    expected = {(0, 1): [5.0, -1.0], (0, 2): [2.0, -1.0], (1, 2): [np.sqrt(9 + 16 + 4), 1.0]}
    got = {(int(i), int(j)): f for (i, j), f in zip(batch.edge_index.T.tolist(), batch.edge_features.numpy())}
    assert len(got) == 6
    for (i, j), feat in expected.items():
        np.testing.assert_allclose(got[(i, j)], feat, rtol=0, atol=1e-14)
        np.testing.assert_allclose(got[(j, i)], feat, rtol=0, atol=1e-14)

    rng = np.random.default_rng(5)
    x, v, a = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    b = collate([FramePair(x, v, x, a)], cutoff=1.8, dtype=torch.float64)
    i, j = b.edge_index.numpy()
    assert b.node_features.shape == (5, 3) and b.edge_features.shape == (len(i), 3)
    np.testing.assert_allclose(b.node_features.numpy()[:, 0], np.linalg.norm(v, axis=1), rtol=1e-14)
    np.testing.assert_array_equal(b.node_features.numpy()[:, 1:], a)
    np.testing.assert_allclose(b.edge_features.numpy()[:, 0], np.linalg.norm(x[i] - x[j], axis=1), rtol=1e-14)
    np.testing.assert_array_equal(b.edge_features.numpy()[:, 1:], a[i] * a[j])


def test_collate_dtype_and_targets():
    """Floating tensors take the requested dtype; targets are the concatenated target positions."""
    rng = np.random.default_rng(1)
    pairs = [make_pair(rng.normal(size=(n, 3)), rng) for n in (3, 4)]
    for dtype in (torch.float32, torch.float64):
        b = collate(pairs, dtype=dtype)
        for t in (b.positions, b.velocities, b.node_features, b.edge_features, b.target_positions):
            assert t.dtype == dtype
        assert b.edge_index.dtype == torch.long
    np.testing.assert_array_equal(b.target_positions.numpy(), np.concatenate([p.target_positions for p in pairs]))


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "field,bad",
    [
        ("positions", np.zeros((4, 2))),
        ("velocities", np.zeros((3, 3))),
        ("target_positions", np.zeros((4, 3, 1))),
        ("node_attrs", np.zeros((5, 1))),
        ("node_attrs", np.zeros((4, 1, 1))),
    ],
)
def test_framepair_shape_validation(field, bad):
    """A FramePair with a mis-shaped array raises ValueError naming the field."""
    kwargs = dict(
        positions=np.zeros((4, 3)), velocities=np.zeros((4, 3)), target_positions=np.zeros((4, 3)), node_attrs=np.zeros((4, 1))
    )
    kwargs[field] = bad
    with pytest.raises(ValueError, match=field):
        FramePair(**kwargs)


def test_framepair_accepts_1d_attrs_and_zero_width_attrs():
    p = FramePair(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3)), np.array([1.0, -1.0, 1.0]))
    assert p.node_attrs.shape == (3, 1)
    q = FramePair(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 0)))
    b = collate([q])
    assert b.node_features.shape == (3, 1) and b.edge_features.shape == (6, 1)


def test_collate_refuses_mixed_attribute_widths_and_empty_input():
    rng = np.random.default_rng(2)
    a = make_pair(rng.normal(size=(3, 3)), rng, attrs=np.ones((3, 1)))
    b = make_pair(rng.normal(size=(3, 3)), rng, attrs=np.ones((3, 2)))
    with pytest.raises(ValueError, match="node_attrs"):
        collate([a, b])
    with pytest.raises(ValueError):
        collate([])


@pytest.mark.parametrize("cutoff", [None, 1.2], ids=["full", "radius"])
def test_edges_between_two_walls_are_left_out(cutoff):
    """With a moving mask, no edge joins two non-moving nodes (walls); every other edge of the
    graph without the mask is kept, both directions; edge dropping then acts on what is left."""
    rng = np.random.default_rng(4)
    x = rng.random((12, 3)) * 2.0
    moving = np.arange(12) < 5
    pair = FramePair(x, rng.normal(size=(12, 3)), x, np.ones((12, 1)))
    plain = collate([pair], cutoff=cutoff).edge_index.numpy()
    walled = collate([FramePair(x, pair.velocities, x, pair.node_attrs, moving=moving)], cutoff=cutoff)
    edges = walled.edge_index.numpy()
    kept = moving[plain[0]] | moving[plain[1]]
    assert not kept.all() and kept.any()
    assert sorted(map(tuple, edges.T)) == sorted(map(tuple, plain[:, kept].T))
    assert (moving[edges[0]] | moving[edges[1]]).all()
    dropped = collate([FramePair(x, pair.velocities, x, pair.node_attrs, moving=moving)], cutoff=cutoff,
                      drop_rate=0.5).edge_index.numpy()
    lengths = np.linalg.norm(x[edges[0]] - x[edges[1]], axis=1)
    assert dropped.shape[1] == drop_longest_edges(edges, lengths, 0.5).shape[1] < edges.shape[1]
    assert (moving[dropped[0]] | moving[dropped[1]]).all()
