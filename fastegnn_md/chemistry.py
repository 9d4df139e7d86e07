"""Node attributes from an atom's identity: what it is in the protein, in any naming convention.

A model trained on these attributes does not depend on one topology's atom count, force field
or naming: the same checkpoint reads AdK in Amber names (856 backbone atoms with OXT), in
CHARMM names (855, OT1/OT2), villin, or ASE Atoms built from a backbone.

Recipe `IDENTITY_RECIPE` (recorded in checkpoints as ``extra["node_attr_recipe"]``), per atom the
concatenation of three one-hot blocks (32 columns):

* **role** (6): N, CA, C, O, OXT, other. The backbone atom name says which bonds and angles an
  atom takes part in (its local geometry); CHARMM's OT1/OT2, PDB's O1/O2 and OC1/OC2 are the
  two carboxyl oxygens of the C-terminus (first → O, second → OXT).
* **residue type** (21): the 20 standard amino acids and "other". It says how bulky and
  flexible the side chain is, which decides how the backbone moves (glycine and proline most of
  all). Protonation and force-field variants map to their amino acid (HSD/HSE/HSP/HID/HIE/HIP →
  HIS, CYX → CYS, ASH → ASP, GLH → GLU, LYN → LYS), as do Amber's terminal names (NALA, CALA).
* **element** (5): C, N, O, S, other; redundant for a backbone, needed for heavy-atom selections.

Why not partial charges (the other recipe, ``charge``): they belong to one force field, GRO and
PDB files do not have them, and for a backbone they say little the atom name does not.

numpy only; names are compared case-insensitively after stripping spaces.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import spec_keys as keys
from .errors import CheckpointError, DataError

IDENTITY_RECIPE = "atom-identity-v1"

ROLES = ("N", "CA", "C", "O", "OXT", "OTHER")
RESIDUES = ("ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
            "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL", "OTHER")
ELEMENTS = ("C", "N", "O", "S", "OTHER")
#: Columns of the identity attributes.
IDENTITY_WIDTH = len(ROLES) + len(RESIDUES) + len(ELEMENTS)

#: Atom names of the same role in other conventions.
ROLE_ALIASES = {"OT1": "O", "O1": "O", "OC1": "O", "OT2": "OXT", "O2": "OXT", "OC2": "OXT", "OT": "OXT"}
#: Residue names of the same amino acid (protonation states, disulfides, force-field spellings).
RESIDUE_ALIASES = {
    "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HIH": "HIS",
    "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS", "MSE": "MET",
}


def residue_type(name: str) -> str:
    """The amino acid of a residue name (`RESIDUES`), "OTHER" when it is none."""
    text = str(name).strip().upper()
    text = RESIDUE_ALIASES.get(text, text)
    if text not in RESIDUES and len(text) == 4 and text[0] in "NC":  # Amber's terminal NALA / CALA
        text = RESIDUE_ALIASES.get(text[1:], text[1:])
    return text if text in RESIDUES else "OTHER"


def atom_role(name: str) -> str:
    """The backbone role of an atom name (`ROLES`)."""
    text = str(name).strip().upper()
    text = ROLE_ALIASES.get(text, text)
    return text if text in ROLES else "OTHER"


def element_class(element: Optional[str], name: str) -> str:
    """The element class (`ELEMENTS`) from an element symbol, or from the atom name's first letter."""
    symbol = str(element).strip().upper() if element else ""
    if not symbol:
        letters = "".join(ch for ch in str(name).strip().upper() if ch.isalpha())
        symbol = letters[:1]
    return symbol if symbol in ELEMENTS else "OTHER"


def identity_attributes(
    names: Sequence[str], residue_names: Sequence[str], elements: Optional[Sequence[Optional[str]]] = None,
    where: str = "atoms",
) -> np.ndarray:
    """(N, `IDENTITY_WIDTH`) float64 one-hot node attributes of N atoms (see the module docstring).

    names : atom names (N,); residue_names : residue names (N,); elements : element symbols (N,)
    or None (read off the names). DataError naming ``where`` when the lengths differ or an atom
    has no name or residue name (what to pass is said).
    """
    names = [str(n) for n in names]
    residue_names = [str(r) for r in residue_names]
    if len(names) != len(residue_names) or (elements is not None and len(elements) != len(names)):
        raise DataError(f"{where}: {len(names)} atom names, {len(residue_names)} residue names"
                        + ("" if elements is None else f" and {len(elements)} elements") + " do not match")
    missing = [i for i, (n, r) in enumerate(zip(names, residue_names)) if not n.strip() or not r.strip()]
    if missing:
        raise DataError(
            f"{where}: atom {missing[0]} has no atom name or residue name; the checkpoint's node attributes come "
            "from atom identity: give atom names and residue names (or a topology that has them)"
        )
    attrs = np.zeros((len(names), IDENTITY_WIDTH))
    roles = [ROLES.index(atom_role(n)) for n in names]
    residues = [len(ROLES) + RESIDUES.index(residue_type(r)) for r in residue_names]
    element_of = elements if elements is not None else [None] * len(names)
    kinds = [len(ROLES) + len(RESIDUES) + ELEMENTS.index(element_class(e, n)) for e, n in zip(element_of, names)]
    rows = np.arange(len(names))
    attrs[rows, roles] = 1.0
    attrs[rows, residues] = 1.0
    attrs[rows, kinds] = 1.0
    return attrs


def uses_identity(spec: object) -> bool:
    """True if a checkpoint's node attributes come from atom identity (this module's recipe);
    CheckpointError for an identity recipe this version does not compute."""
    extra = getattr(spec, "extra", {})
    if extra.get(keys.NODE_ATTR_SOURCE) != "identity":
        return False
    recipe = extra.get(keys.NODE_ATTR_RECIPE)
    if recipe != IDENTITY_RECIPE:
        raise CheckpointError(f"checkpoint: node-attribute recipe {recipe!r} is not {IDENTITY_RECIPE!r}, the one "
                              "this fastegnn-md computes; upgrade fastegnn-md")
    return True
