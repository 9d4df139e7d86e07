"""MDAnalysis adapter: AdK files from MDAnalysisTests -> FramePairs, splits, cache, errors."""

from __future__ import annotations

import os
import re
import shutil

import MDAnalysis as mda
import numpy as np
import pytest
from MDAnalysisTests.datafiles import DCD, GRO, PDB_small, PSF, TPR, TRR, XTC

from fastegnn_md.adapters import mdanalysis as mdx
from fastegnn_md.adapters.mdanalysis import dataset as md_dataset  # where load_md_pairs looks its readers up
from fastegnn_md.checkpoint import DataSpec
from fastegnn_md.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

BACKBONE_ATOMS = 855  # AdK: 214 x (N, CA, C, O) but the C-terminal O is named OT1
TPR_CHAIN_BOND = 2.0  # Å; every N-CA, CA-C, C-N bond is ~1.3-1.5 Å


def one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def reference_backbone(topology: str, trajectory: str, frames=None, velocities=False) -> np.ndarray:
    """What MDAnalysis itself reads for the backbone, without any transformation."""
    universe = mda.Universe(topology, trajectory)
    backbone = universe.select_atoms("backbone")
    out = []
    for ts in universe.trajectory:
        if frames is None or ts.frame in frames:
            out.append(backbone.velocities.copy() if velocities else backbone.positions.copy())
    return np.asarray(out, dtype=np.float64)


def whole_arrays(topology: str, trajectory: str, velocities: bool = False):
    universe = mdx.open_universe(topology, trajectory)
    backbone = mdx.select_atoms(universe, "backbone")
    method = mdx.whole_method(universe, backbone)
    mdx.make_whole(universe, backbone)
    positions, vels, frame_dt = mdx.trajectory_frames(universe, backbone, velocities=velocities, progress=False)
    return {"positions": positions, "velocities": vels, "frame_dt": frame_dt, "method": method,
            "names": backbone.names.copy()}


@pytest.fixture(scope="module")
def tpr_xtc():
    return whole_arrays(TPR, XTC)


@pytest.fixture(scope="module")
def tpr_trr():
    return whole_arrays(TPR, TRR, velocities=True)


@pytest.fixture(scope="module")
def psf_dcd():
    universe = mdx.open_universe(PSF, DCD)
    backbone = mdx.select_atoms(universe)
    attrs, source = mdx.node_attributes(backbone)
    positions, vels, frame_dt = mdx.trajectory_frames(universe, backbone, progress=False)
    return {"positions": positions, "velocities": vels, "frame_dt": frame_dt, "attrs": attrs,
            "source": source, "masses": mdx.atom_masses(backbone), "charges": backbone.charges.copy(),
            "universe": universe, "backbone": backbone}


# ------------------------------------------------------------------ PSF + DCD


def test_psf_dcd_backbone_charges_and_positions(psf_dcd):
    assert len(psf_dcd["backbone"]) == BACKBONE_ATOMS
    assert psf_dcd["source"] == "charge"
    assert psf_dcd["attrs"].shape == (BACKBONE_ATOMS, 1) and psf_dcd["attrs"].dtype == np.float64
    np.testing.assert_array_equal(psf_dcd["attrs"][:, 0], psf_dcd["charges"])
    assert mdx.whole_method(psf_dcd["universe"], psf_dcd["backbone"]) == "none"  # DCD has no box
    positions = psf_dcd["positions"]
    assert positions.shape == (98, BACKBONE_ATOMS, 3) and positions.dtype == np.float64
    assert psf_dcd["velocities"] is None
    assert psf_dcd["frame_dt"] == pytest.approx(mda.Universe(PSF, DCD).trajectory.dt)
    frames = [0, 5, 41, 97]
    np.testing.assert_array_equal(positions[frames], reference_backbone(PSF, DCD, frames))


@pytest.mark.parametrize("convention, count, first", [("backward", 98 - 10, 5), ("forward", 98 - 5, 0)])
def test_psf_dcd_pair_count_and_dt(psf_dcd, convention, count, first):
    d = psf_dcd
    pairs = mdx.frame_pairs(d["positions"], None, d["attrs"], d["masses"], d["frame_dt"], 5, convention, source=DCD)
    assert len(pairs) == count
    assert pairs[0].metadata["frames"] == (first, first + 5)
    assert pairs[-1].metadata["frames"] == (97 - 5, 97)
    for pair in (pairs[0], pairs[-1]):
        assert pair.metadata["dt"] == pytest.approx(5 * d["frame_dt"])
        assert pair.metadata["velocity_convention"] == convention
        assert pair.metadata["source"] == DCD
        t, target = pair.metadata["frames"]
        np.testing.assert_array_equal(pair.positions, d["positions"][t])
        np.testing.assert_array_equal(pair.target_positions, d["positions"][target])
        np.testing.assert_array_equal(pair.masses, d["masses"])


def test_backward_velocity_computed_independently(psf_dcd):
    d, jump = psf_dcd, 5
    pairs = mdx.frame_pairs(d["positions"], None, d["attrs"], d["masses"], d["frame_dt"], jump, "backward")
    assert pairs[0].metadata["frames"][0] == jump
    dt = mda.Universe(PSF, DCD).trajectory.dt
    for pair in (pairs[0], pairs[17]):
        t = pair.metadata["frames"][0]
        x_before, x_t, x_after = reference_backbone(PSF, DCD, [t - jump, t, t + jump])
        np.testing.assert_allclose(pair.velocities, (x_t - x_before) / (jump * dt), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(pair.target_velocities, (x_after - x_t) / (jump * dt), rtol=1e-12, atol=1e-12)


def test_forward_velocity_is_next_frame_difference(psf_dcd):
    d = psf_dcd
    pair = mdx.frame_pairs(d["positions"], None, d["attrs"], None, d["frame_dt"], 3, "forward", frames=[10])[0]
    expected = (d["positions"][11] - d["positions"][10]) / d["frame_dt"]
    np.testing.assert_allclose(pair.velocities, expected, rtol=1e-12)
    assert pair.target_velocities is None and pair.masses is None


def test_pairs_share_read_only_frames(psf_dcd):
    d = psf_dcd
    pairs = mdx.frame_pairs(d["positions"], None, d["attrs"], None, d["frame_dt"], 1, "backward", frames=[1, 2])
    assert np.shares_memory(pairs[0].target_positions, pairs[1].positions)
    with pytest.raises(ValueError):
        pairs[0].target_positions += 1.0  # would otherwise change the next pair's input
    assert d["positions"].flags.writeable  # the caller's array is untouched


def test_load_md_pairs_psf_dcd_splits_and_spec():
    jump, stride = 2, 2
    dataset = mdx.load_md_pairs(PSF, DCD, jump=jump, stride=stride, progress=False)
    spec = dataset.spec_fields
    frame_dt = mda.Universe(PSF, DCD).trajectory.dt
    assert spec["units"] == {"length": "Å", "time": "ps"}
    assert spec["dt"] == pytest.approx(jump * stride * frame_dt)
    assert spec["frame_stride"] == jump * stride
    assert (spec["velocity_convention"], spec["cutoff"], spec["selection"]) == ("backward", 10.0, "backbone")
    assert (spec["num_nodes"], spec["num_node_attrs"]) == (BACKBONE_ATOMS, 1)
    assert spec["extra"]["node_attr_source"] == "charge"
    assert spec["extra"]["topology"] == "adk.psf" and spec["extra"]["trajectory"] == ["adk_dims.dcd"]  # issue 13
    assert len(spec["extra"]["node_attrs"]) == BACKBONE_ATOMS and len(spec["extra"]["node_attrs"][0]) == 1
    DataSpec(**spec).check_fits(num_node_attrs=1, num_nodes=BACKBONE_ATOMS)
    assert list(dataset.splits) == ["train", "valid", "test"]
    # 98 frames with stride 2 -> 49 frames; the pairs of each split are its input frames.
    for name, pairs in dataset.splits.items():
        assert [p.metadata["frames"][0] for p in pairs] == list(dataset.frames[name])
    # Strided frame t is the trajectory's frame stride * t.
    pair = dataset.splits["valid"][0]
    t, target = pair.metadata["frames"]
    np.testing.assert_array_equal(pair.positions, reference_backbone(PSF, DCD, [stride * t])[0])
    np.testing.assert_array_equal(pair.target_positions, reference_backbone(PSF, DCD, [stride * target])[0])


def test_mass_fallback_for_topology_without_charges():
    universe = mdx.open_universe(PDB_small)
    backbone = mdx.select_atoms(universe, "backbone")
    attrs, source = mdx.node_attributes(backbone)
    assert source == "mass" and attrs.shape == (len(backbone), 1)
    names = backbone.names
    np.testing.assert_allclose(attrs[names == "CA", 0], 1.0)
    np.testing.assert_allclose(attrs[names == "N", 0], backbone.masses[names == "N"] / 12.011)


# ------------------------------------------------------------------ periodic boundaries


def chain_bond_lengths(positions: np.ndarray, names: np.ndarray) -> np.ndarray:
    """(T, B) lengths of every N-CA, CA-C and C-N(next residue) bond of the backbone chain."""
    n, ca, c = (np.nonzero(names == name)[0] for name in ("N", "CA", "C"))
    assert len(n) == len(ca) == len(c) == 214
    starts = np.concatenate([n, ca, c[:-1]])
    ends = np.concatenate([ca, c, n[1:]])
    return np.linalg.norm(positions[:, starts] - positions[:, ends], axis=-1)


@pytest.mark.parametrize("trajectory, fixture", [(XTC, "tpr_xtc"), (TRR, "tpr_trr")])
def test_make_whole_unwraps_split_protein(request, trajectory, fixture):
    before = reference_backbone(TPR, trajectory)
    consecutive = np.linalg.norm(np.diff(before, axis=1), axis=-1)
    assert consecutive.max() > 20.0  # the raw frames have the protein split across the box
    whole = request.getfixturevalue(fixture)
    assert whole["method"] == "unwrap"
    assert whole["positions"].shape == (10, BACKBONE_ATOMS, 3)
    assert whole["frame_dt"] == pytest.approx(100.0, rel=1e-6)
    assert chain_bond_lengths(whole["positions"], whole["names"]).max() < TPR_CHAIN_BOND


def test_minimum_image_chain_fallback_matches_unwrap(tpr_xtc):
    gro = whole_arrays(GRO, XTC)  # GRO has no bonds
    assert gro["method"] == "minimum-image chain"
    np.testing.assert_allclose(np.diff(gro["positions"], axis=1), np.diff(tpr_xtc["positions"], axis=1), atol=2e-3)
    # The two differ by one whole-box translation per frame (one molecule here).
    shift = gro["positions"] - tpr_xtc["positions"]
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1], shift.shape), atol=2e-3)
    assert chain_bond_lengths(gro["positions"], gro["names"]).max() < TPR_CHAIN_BOND


def test_chain_runs_split_at_segments():
    universe = mda.Universe(PSF, DCD)
    atoms = universe.select_atoms("name CA")
    runs = mdx.chain_runs(atoms)
    assert len(runs) == 1 and np.array_equal(runs[0], atoms.ix)
    two_segments = mda.Merge(atoms, atoms)  # the copy is a second segment
    runs = mdx.chain_runs(two_segments.atoms)
    assert [len(run) for run in runs] == [214, 214]


# ------------------------------------------------------------------ velocities


def test_trr_physical_velocities_equal_mdanalysis(tpr_trr):
    reference = reference_backbone(TPR, TRR, velocities=True)
    np.testing.assert_array_equal(tpr_trr["velocities"], reference)
    attrs = np.zeros((BACKBONE_ATOMS, 1))
    pairs = mdx.frame_pairs(tpr_trr["positions"], tpr_trr["velocities"], attrs, None, tpr_trr["frame_dt"], 2, "physical")
    assert len(pairs) == 8 and pairs[0].metadata["frames"] == (0, 2)
    np.testing.assert_array_equal(pairs[3].velocities, reference[3])
    np.testing.assert_array_equal(pairs[3].target_velocities, reference[5])


def test_physical_without_velocities_is_one_line_error(psf_dcd):
    with pytest.raises(DataError) as excinfo:
        mdx.load_md_pairs(TPR, XTC, velocity_convention="physical", progress=False)
    one_line_error(excinfo, XTC, "no velocities", "backward")
    d = psf_dcd
    with pytest.raises(DataError) as excinfo:
        mdx.frame_pairs(d["positions"], None, d["attrs"], None, d["frame_dt"], 1, "physical", source=DCD)
    one_line_error(excinfo, DCD, "no velocities", "backward")


# ------------------------------------------------------------------ splits


def used_frames(frames: range, jump: int, history: int) -> np.ndarray:
    """Every frame the examples of one split read: inputs, targets, history, t + 1."""
    t = np.asarray(frames)
    return np.unique(np.concatenate([t - history, t, t + 1, t + jump]))


@pytest.mark.parametrize("num_frames, jump, history", [(4187, 15, 15), (4187, 15, 0), (98, 5, 5), (49, 1, 0), (31, 2, 2)])
def test_contiguous_splits_blocks(num_frames, jump, history):
    ratios = mdx.PAPER_ADK_RATIOS
    splits = mdx.contiguous_splits(num_frames, ratios, jump=jump, history=history)
    assert list(splits) == ["train", "valid", "test"]
    expected_start = 0
    for (name, frames), ratio in zip(splits.items(), ratios):
        assert len(frames) > 0 and frames.step == 1
        block = range(frames.start - history, frames.stop - 1 + jump + 1)
        assert block.start == expected_start  # contiguous and ordered
        assert abs(len(block) - num_frames * ratio / sum(ratios)) <= 1.0  # ratio within one frame
        used = used_frames(frames, jump, history)
        assert used.min() >= block.start and used.max() < block.stop  # nothing crosses a block
        expected_start = block.stop
    assert expected_start == num_frames
    train, valid, test = (used_frames(f, jump, history) for f in splits.values())
    assert train.max() < valid.min() and valid.max() < test.min()


def test_contiguous_splits_too_short_says_how_many_frames():
    with pytest.raises(DataError) as excinfo:
        mdx.contiguous_splits(20, jump=5, history=5)
    message = one_line_error(excinfo, "20 frames", "frames are needed")
    needed = int(re.search(r"at least (\d+) frames are needed", message).group(1))
    mdx.contiguous_splits(needed, jump=5, history=5)
    with pytest.raises(DataError):
        mdx.contiguous_splits(needed - 1, jump=5, history=5)


# ------------------------------------------------------------------ cache


def test_cache_hit_skips_reading_and_misses_on_changes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = mdx.load_md_pairs(PSF, DCD, jump=5, cache_dir=cache, progress=False)
    assert not first.cached
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob(".*"))

    class Read(Exception):
        pass

    def refuse(*args, **kwargs):
        raise Read("the trajectory was read")

    monkeypatch.setattr(md_dataset, "trajectory_frames", refuse)
    monkeypatch.setattr(md_dataset, "open_universe", refuse)
    second = mdx.load_md_pairs(PSF, DCD, jump=5, cache_dir=cache, progress=False)
    assert second.cached
    assert second.spec_fields == first.spec_fields and second.frames == first.frames
    for name in first.splits:
        assert len(second.splits[name]) == len(first.splits[name])
        for a, b in zip(first.splits[name], second.splits[name]):
            for attr in ("positions", "velocities", "target_positions", "target_velocities", "node_attrs", "masses"):
                np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
            assert a.metadata == b.metadata
    # A different jump or convention reuses the arrays.
    assert mdx.load_md_pairs(PSF, DCD, jump=3, velocity_convention="forward", cache_dir=cache, progress=False).cached
    for changed in ({"selection": "name CA"}, {"stride": 2}):
        with pytest.raises(Read):
            mdx.load_md_pairs(PSF, DCD, jump=5, cache_dir=cache, progress=False, **changed)


def test_cache_misses_when_the_file_changes(tmp_path, monkeypatch):
    dcd = tmp_path / "adk.dcd"
    shutil.copyfile(DCD, dcd)
    mdx.load_md_pairs(PSF, dcd, jump=5, cache_dir=tmp_path, progress=False)
    stat = dcd.stat()
    os.utime(dcd, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    monkeypatch.setattr(md_dataset, "trajectory_frames", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("read")))
    with pytest.raises(RuntimeError, match="read"):
        mdx.load_md_pairs(PSF, dcd, jump=5, cache_dir=tmp_path, progress=False)


# ------------------------------------------------------------------ errors


def test_missing_topology(tmp_path):
    missing = tmp_path / "nope.psf"
    with pytest.raises(DataError) as excinfo:
        mdx.load_md_pairs(missing, DCD, progress=False)
    one_line_error(excinfo, str(missing), "no such file")
    with pytest.raises(DataError) as excinfo:
        mdx.open_universe(PSF, [DCD, tmp_path / "nope.dcd"])
    one_line_error(excinfo, "nope.dcd", "no such file")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreadable_and_unsupported_files(tmp_path):
    garbage = tmp_path / "garbage.dcd"
    garbage.write_bytes(b"\x00not a dcd file\xff" * 64)
    with pytest.raises(DataError) as excinfo:
        mdx.open_universe(PSF, garbage)
    one_line_error(excinfo, str(garbage), "cannot read")
    unknown = tmp_path / "frames.foo"
    unknown.write_text("1 2 3\n")
    with pytest.raises(DataError) as excinfo:
        mdx.open_universe(PSF, unknown)
    one_line_error(excinfo, str(unknown), "unsupported")
    with pytest.raises(DataError) as excinfo:
        mdx.open_universe(garbage)
    one_line_error(excinfo, str(garbage), "topology")


def test_atom_count_mismatch():
    with pytest.raises(DataError) as excinfo:
        mdx.open_universe(PSF, XTC)
    one_line_error(excinfo, XTC, "47681 atoms", "3341")


def test_topology_without_coordinates():
    with pytest.raises(DataError) as excinfo:
        mdx.open_universe(PSF)
    one_line_error(excinfo, PSF, "no coordinates")


def test_bad_selections(psf_dcd):
    universe = psf_dcd["universe"]
    with pytest.raises(DataError) as excinfo:
        mdx.select_atoms(universe, "name XYZ")
    one_line_error(excinfo, PSF, "'name XYZ'", "matches no atoms")
    with pytest.raises(DataError) as excinfo:
        mdx.select_atoms(universe, "backbone and")
    one_line_error(excinfo, PSF, "'backbone and'", "invalid")
    with pytest.raises(DataError) as excinfo:
        mdx.load_md_pairs(PSF, DCD, selection="resname NOPE", progress=False)
    one_line_error(excinfo, PSF, "'resname NOPE'")


def test_jump_longer_than_trajectory(psf_dcd):
    with pytest.raises(DataError) as excinfo:
        mdx.load_md_pairs(PSF, DCD, jump=200, progress=False)
    one_line_error(excinfo, DCD, "98 frames", "jump 200")
    d = psf_dcd
    with pytest.raises(DataError) as excinfo:
        mdx.frame_pairs(d["positions"], None, d["attrs"], None, d["frame_dt"], 60, "backward", source=DCD)
    one_line_error(excinfo, DCD, "98 frames", "121")
    with pytest.raises(DataError) as excinfo:
        mdx.frame_pairs(d["positions"], None, d["attrs"], None, d["frame_dt"], 5, "backward", frames=[2], source=DCD)
    one_line_error(excinfo, DCD, "input frame 2", "5..92")
