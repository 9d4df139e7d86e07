"""Node attributes from atom identity: one checkpoint for any protein backbone in any naming."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from MDAnalysisTests.datafiles import DCD, PDB_small, PSF

from fastegnn_md.chemistry import ELEMENTS, IDENTITY_RECIPE, RESIDUES, ROLES, identity_attributes
from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.errors import DataError
from fastegnn_md.predictor import Predictor
from fastegnn_md.rollouts import rollout_trajectory

ROOT = Path(__file__).resolve().parents[1]
AMBER_ADK = ROOT / "trajectories" / "adk-obc" / "adk_obc.xtc"
VILLIN = ROOT / "trajectories" / "villin" / "villin_seed2.xtc"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def columns(row: np.ndarray) -> tuple[str, str, str]:
    role, residue, element = np.split(row, [len(ROLES), len(ROLES) + len(RESIDUES)])
    return ROLES[role.argmax()], RESIDUES[residue.argmax()], ELEMENTS[element.argmax()]


def test_identity_attributes_by_hand():
    names = ["N", "CA", "C", "O", "OXT", "OT1", "OT2", "CB", "SG", "HA"]
    residues = ["HSD", "NALA", "CALA", "CYX", "GLY", "LYS", "LYS", "XYZ", "CYS", "HIE"]
    attrs = identity_attributes(names, residues)
    assert attrs.shape == (10, 32) and np.array_equal(attrs.sum(axis=1), np.full(10, 3.0))
    assert [columns(row) for row in attrs] == [
        ("N", "HIS", "N"), ("CA", "ALA", "C"), ("C", "ALA", "C"), ("O", "CYS", "O"), ("OXT", "GLY", "O"),
        ("O", "LYS", "O"), ("OXT", "LYS", "O"), ("OTHER", "OTHER", "C"), ("OTHER", "CYS", "S"),
        ("OTHER", "HIS", "OTHER"),
    ]
    # An element given beats the name's first letter (CA of calcium is not carbon's CA).
    assert columns(identity_attributes(["CA"], ["CA"], ["Ca"])[0])[2] == "OTHER"
    with pytest.raises(DataError, match="atom 1 has no atom name or residue name"):
        identity_attributes(["N", ""], ["ALA", "ALA"], where="x.pdb")
    with pytest.raises(DataError, match="2 atom names, 1 residue names do not match"):
        identity_attributes(["N", "CA"], ["ALA"])


def test_the_same_protein_in_two_namings_gets_the_same_attributes():
    import MDAnalysis

    from fastegnn_md.adapters.mdanalysis import node_attributes

    charmm = MDAnalysis.Universe(PSF, DCD).select_atoms("backbone")  # 855 atoms, CHARMM names
    amber = MDAnalysis.Universe(str(AMBER_ADK.with_suffix(".pdb"))).select_atoms("backbone")  # 856, Amber
    a, source = node_attributes(charmm, "identity")
    b, _ = node_attributes(amber, "identity")
    assert source == "identity" and a.shape == (855, 32) and b.shape == (856, 32)
    np.testing.assert_array_equal(a, b[: len(a)])  # the same residues and roles, atom for atom
    assert columns(b[-1]) == ("O", "GLY", "O")  # Amber names the C-terminal oxygen O (CHARMM: OT1, not "backbone")


@pytest.fixture(scope="module")
def identity_checkpoint(tmp_path_factory, tiny_md_model) -> Path:
    """A tiny FastEGNN trained on the CHARMM-named AdK DCD with identity attributes (5 ps jumps)."""
    import torch

    from fastegnn_md.adapters.mdanalysis import load_md_pairs
    from fastegnn_md.training import TrainConfig, Trainer

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_md_pairs(PSF, DCD, jump=5, progress=False, node_attrs="identity")
    run = tmp_path_factory.mktemp("identity")
    config = TrainConfig(hidden=8, layers=1, cutoff=10.0, epochs=1, batch_size=2, sigma=1.0, mmd_weight=0.5,
                         mmd_samples=20, length_scale=10.0)
    Trainer(config, data.splits["train"][:4], data.splits["valid"][:2], run, data.spec_fields, str(DCD),
            progress=False).fit(resume=False)
    return run / "best.pt"


def test_the_checkpoint_records_the_recipe_and_pins_no_atom_count(identity_checkpoint):
    spec = load_checkpoint(identity_checkpoint).data_spec
    assert spec.num_nodes is None and spec.num_node_attrs == 32
    assert spec.extra["node_attr_source"] == "identity" and spec.extra["node_attr_recipe"] == IDENTITY_RECIPE
    assert "node_attrs" not in spec.extra  # nothing per atom of the training topology
    with pytest.raises(DataError, match="come from atom identity"):
        Predictor.from_checkpoint(identity_checkpoint).predict(np.zeros((5, 3)), np.zeros((5, 3)))


@pytest.mark.parametrize("trajectory, topology, atoms", [
    (DCD, PSF, 855),  # AdK, CHARMM names (the training data)
    (AMBER_ADK, None, 856),  # AdK, Amber names, another force field's trajectory
    (VILLIN, None, 140),  # another protein
])
def test_one_checkpoint_rolls_out_any_backbone(identity_checkpoint, tmp_path, trajectory, topology, atoms):
    out = rollout_trajectory(trajectory, topology, identity_checkpoint, start=10, jumps=2, report_dir=tmp_path / "r",
                             progress=False)
    assert out.stopped is None and out.report["info"]["atoms"] == atoms
    assert len(out.report["per_jump"]) == 2


def test_one_checkpoint_drives_ase_atoms_built_from_a_backbone(identity_checkpoint):
    import MDAnalysis

    from fastegnn_md import FastEGNNCalculator
    from fastegnn_md.adapters.ase import atoms_from_mdanalysis

    backbone = MDAnalysis.Universe(PDB_small).select_atoms("backbone")
    atoms = atoms_from_mdanalysis(backbone)
    atoms.calc = FastEGNNCalculator(identity_checkpoint, velocity_input="atoms")
    jumped = atoms.calc.get_property("jumped_positions", atoms)
    assert jumped.shape == (len(backbone), 3) and np.isfinite(jumped).all()
    del atoms.arrays["residuenames"]
    atoms.calc = FastEGNNCalculator(identity_checkpoint, velocity_input="atoms")
    with pytest.raises(DataError, match=r"no atoms.arrays\['atomtypes'\] and \['residuenames'\]"):
        atoms.calc.get_property("jumped_positions", atoms)


def test_replicas_are_split_one_by_one_and_never_paired_across_files(tmp_path):
    """`train --replica`: every file gets its own contiguous blocks; the spec lists each file's
    training frames; a replica of another system is refused naming it."""
    from fastegnn_md.adapters.mdanalysis.kind import MDOptions, open_md_trajectory
    from fastegnn_md.errors import DataError

    villin = ROOT / "trajectories" / "villin"
    options = MDOptions(stride=50, node_attrs="identity", progress=False,
                        replicas=(villin / "villin_seed2.xtc",))
    one = open_md_trajectory(villin / "villin_seed1.xtc", MDOptions(stride=50, node_attrs="identity", progress=False))
    two = open_md_trajectory(villin / "villin_seed1.xtc", options)
    for split in ("train", "valid", "test"):
        assert len(two.load(split)) > len(one.load(split))
    extra = two.spec_fields["extra"]
    assert extra["trajectory"] == ["villin_seed1.xtc", "villin_seed2.xtc"]
    assert set(extra["train_frames"]) == {"villin_seed1.xtc", "villin_seed2.xtc"}
    # The pairs from the replica are exactly those of the replica read alone: its own blocks, and
    # no pair has its input in one file and its target in the other.
    alone = open_md_trajectory(villin / "villin_seed2.xtc", MDOptions(stride=50, node_attrs="identity", progress=False))
    for split in ("train", "valid", "test"):
        joined = [pair for pair in two.load(split) if pair.metadata["source"].endswith("villin_seed2.xtc")]
        assert len(joined) == len(alone.load(split)) > 0
        for a, b in zip(joined, alone.load(split)):
            np.testing.assert_array_equal(a.positions, b.positions)
            np.testing.assert_array_equal(a.target_positions, b.target_positions)
    other = MDOptions(stride=10, progress=False, replicas=(ROOT / "trajectories" / "adk-obc" / "adk_obc.xtc",))
    with pytest.raises(DataError, match="--replica .*adk_obc.xtc"):
        open_md_trajectory(villin / "villin_seed1.xtc", other)
