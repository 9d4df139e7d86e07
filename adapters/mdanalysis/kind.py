"""The MD-trajectory data kind: any trajectory file MDAnalysis reads, split into contiguous blocks.

Units: Å, ps, amu (MDAnalysis' own). Reading options are `MDOptions`; `dataset.load_md_pairs`
does the reading. A checkpoint trained on such data records the selection, jump, stride,
velocity convention, cutoff and the node attributes' source, and `open_for_checkpoint` reads
new data the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ... import spec_keys as keys
from ...chemistry import uses_identity
from ...conventions import BACKWARD, canonical_convention
from ...data.kinds import DataKind, Dataset, PathLike, TrainingDefaults
from ...errors import DataError
from .dataset import load_md_pairs
from .fit import NO_FIT, check_fit_mode, fit_mode_of
from .reading import resolve_md_files

#: Default length scale of molecular data (Å): the paper's 10 Å cutoff, so neighbour distances
#: inside the model are at most 1 (`fastegnn_md.models.contract.JumpModel`).
MOLECULAR_LENGTH_SCALE = 10.0


@dataclass
class MDOptions:
    """How to read an MD trajectory; the defaults are the CLI's.

    topology : topology file; None = `reading.find_topology` (a file beside the trajectory).
    selection : MDAnalysis selection of the atoms that become graph nodes.
    jump, stride : the learned jump is ``jump`` frames of the trajectory read every ``stride``
        frames, i.e. ``jump * stride`` frames of the file.
    velocity_convention : "backward", "physical" or "forward" (`fastegnn_md.conventions`).
    cutoff : radius-graph cutoff in Å (None: fully connected graphs).
    cache_dir : where the adapter caches the processed arrays (None: no cache).
    progress : progress bar while reading frames.
    node_attrs : "charge" (partial charges, else masses) or "identity" (atom role, residue type,
        element: `fastegnn_md.chemistry`; a model trained on them serves any protein and naming).
    replicas : further trajectory files: independent runs of the same system (other seeds),
        or, with identity attributes (which pin no atom count), other proteins, so one model
        learns several. Each is read like the first (its own topology beside it unless
        ``topology`` is given) and split into its own contiguous train/valid/test blocks; the
        splits are joined, so no pair spans two files and every file contributes to every split.
    fit : "none" (lab frame) or "first-frame": each file's frames superposed onto its first
        (`fit`), removing the rigid tumbling no jump can predict.
    discard_ps : ps at the start of every file left out as equilibration (`load_md_pairs`).
    """

    topology: Optional[Path] = None
    selection: str = "backbone"
    jump: int = 1
    stride: int = 1
    velocity_convention: str = BACKWARD
    cutoff: Optional[float] = 10.0
    cache_dir: Optional[Path] = None
    progress: bool = True
    node_attrs: str = "charge"
    replicas: tuple[Path, ...] = ()
    fit: str = NO_FIT
    discard_ps: float = 0.0


def open_md_trajectory(path: PathLike, options: Optional[MDOptions] = None) -> Dataset:
    """Read an MD trajectory into train/valid/test pairs (`load_md_pairs`); see `MDOptions`.

    The spec's ``extra`` gets ``dataset_format`` = `MD_FORMAT` on top of the adapter's fields
    (topology path and PDB text, node attributes, jump, stride, ...).
    """
    path = Path(path)
    options = options or MDOptions()
    replicas = [Path(file) for file in options.replicas]
    loaded = [_load_one(file, options) for file in (path, *replicas)]
    spec = dict(loaded[0].spec_fields)
    if replicas:
        spec = _joined_spec(spec, [(file, part.spec_fields) for file, part in zip(replicas, loaded[1:])], path)
    spec["extra"] = {**spec["extra"], keys.DATASET_FORMAT: keys.MD_FORMAT}
    splits = {name: [pair for part in loaded for pair in part.splits[name]] for name in loaded[0].splits}
    return Dataset(path, keys.MD_FORMAT, spec, splits=splits)


def _load_one(path: Path, options: MDOptions) -> Any:
    topology, trajectory = resolve_md_files(path, options.topology)
    return load_md_pairs(
        topology,
        trajectory,
        selection=options.selection,
        jump=options.jump,
        stride=options.stride,
        velocity_convention=options.velocity_convention,
        cutoff=options.cutoff,
        cache_dir=options.cache_dir,
        progress=options.progress,
        node_attrs=options.node_attrs,
        fit=options.fit,
        discard_ps=options.discard_ps,
    )


def _joined_spec(first: dict[str, Any], others: list[tuple[Path, dict[str, Any]]], path: Path) -> dict[str, Any]:
    """The first file's spec fields, extended by the other files: the same jump in time and node
    attribute width, and, unless the attributes are identity ones (no atom count pinned), the
    same atoms. The trajectory names and each file's training/validation frames are listed for
    all of them."""
    extra = dict(first["extra"])
    names = list(extra[keys.TRAJECTORY])
    train, valid = dict(extra[keys.TRAIN_FRAMES]), dict(extra[keys.VALID_FRAMES])
    for replica, fields in others:
        if not math.isclose(fields["dt"], first["dt"], rel_tol=1e-6):
            raise DataError(f"--replica {replica}: a jump spans {fields['dt']:g} ps here but "
                            f"{first['dt']:g} ps in {path}; replicas need the same frame interval")
        if fields["num_node_attrs"] != first["num_node_attrs"]:
            raise DataError(f"--replica {replica}: {fields['num_node_attrs']} node attributes per atom, "
                            f"{first['num_node_attrs']} in {path}")
        mine, theirs = fields["extra"], first["extra"]
        if first["num_nodes"] is not None and (fields["num_nodes"] != first["num_nodes"]
                                               or mine.get(keys.NODE_ATTRS) != theirs.get(keys.NODE_ATTRS)):
            raise DataError(f"--replica {replica}: the selection gives other atoms than in {path} "
                            f"({fields['num_nodes']} against {first['num_nodes']} atoms, or other charges); "
                            "replicas must be runs of the same system")
        names += mine[keys.TRAJECTORY]
        train.update(mine[keys.TRAIN_FRAMES])
        valid.update(mine[keys.VALID_FRAMES])
    if len(set(names)) != len(names):
        raise DataError(f"--replica: the trajectory files must have different names, got {', '.join(names)}")
    extra.update({keys.TRAJECTORY: names, keys.TRAIN_FRAMES: train, keys.VALID_FRAMES: valid})
    return {**first, "extra": extra}


def md_options_for_spec(spec: Any, topology: Optional[Path] = None, cache_dir: Optional[Path] = None,
                        progress: bool = True) -> MDOptions:
    """The MDOptions that read a trajectory the way a checkpoint's DataSpec was trained on.

    Jump and stride come from ``extra["jump"]``/``extra["stride"]``; specs without them count
    ``frame_stride`` as the jump with stride 1 (same frames of the file).
    """
    extra = spec.extra
    stride = int(extra.get(keys.STRIDE, 1))
    jump = int(extra.get(keys.JUMP, max(int(spec.frame_stride) // stride, 1)))
    return MDOptions(
        topology=topology,
        selection=spec.selection or "backbone",
        jump=jump,
        stride=stride,
        velocity_convention=spec.velocity_convention,
        cutoff=spec.cutoff,
        cache_dir=cache_dir,
        progress=progress,
        node_attrs="identity" if uses_identity(spec) else "charge",
        fit=fit_mode_of(extra),
        # The same blocks as in training: a checkpoint's test split is the one it never saw.
        discard_ps=float(extra.get(keys.DISCARD_PS, 0.0)),
    )


class MDTrajectoryKind(DataKind):
    name = "md"
    order = 10
    format = keys.MD_FORMAT
    description = "an MD trajectory file"
    options_class = MDOptions
    plural = "MD trajectory files"
    data_name = "an MD trajectory"
    # Rollout training chosen by measurement on villin (benchmarks/RESULTS.md): without the
    # local-distance term and the unroll a 100-jump rollout leaves physical geometry by jump 20,
    # with either alone by jump 33-57, with both not in 100 jumps (2 of 3 seeds) but compacted
    # (Rg below the reference's range in 3 of 3); the radial-distance term holds Rg (3 of 3).
    training = TrainingDefaults(length_scale=MOLECULAR_LENGTH_SCALE, local_distance_weight=10.0,
                                local_distance_cutoff=2.6, radial_distance_weight=1.0, unroll=3)
    train_flags = {
        "--topology": "topology", "--selection": "selection", "--jump": "jump", "--stride": "stride",
        "--velocity": "velocity_convention", "--cache-dir": "cache_dir", "--node-attrs": "node_attrs",
        "--replica": "replicas", "--fit": "fit", "--discard": "discard_ps",
    }
    rollout_flags = {"--topology": "topology"}
    flag_hints = {"--frames": "use --jump/--stride"}

    def recognises(self, path: Path) -> bool:
        return not path.is_dir()  # any file (MDAnalysis decides whether it can read it)

    def owns_spec(self, spec: Any) -> bool:
        # Checkpoints trained through the Python API on `load_md_pairs` data lack the format.
        fmt = spec.extra.get(keys.DATASET_FORMAT)
        return fmt == self.format or (fmt is None and keys.TOPOLOGY in spec.extra)

    def option_value(self, name: str, value: Any, where: str) -> Any:
        if name == "replicas":
            missing = [str(file) for file in value if not Path(file).is_file()]
            if missing:
                raise DataError(f"--replica {missing[0]}: no such trajectory file")
            return tuple(Path(file) for file in value)
        if name == "fit":
            return check_fit_mode(value, "--fit")
        return canonical_convention(value, "--velocity") if name == "velocity_convention" else value

    def open(self, path: PathLike, options: Any = None) -> Dataset:
        return open_md_trajectory(path, options)

    def options_for_spec(self, spec: Any, **reading: Any) -> MDOptions:
        return md_options_for_spec(spec, **reading)

    def check_fits_spec(self, dataset: Dataset, spec: Any) -> None:
        fields, path = dataset.spec_fields, dataset.path
        if not math.isclose(fields["dt"], spec.dt, rel_tol=1e-3):
            frames = fields["frame_stride"]
            raise DataError(
                f"{path}: a jump of {frames} frames spans {fields['dt']:g} {fields['units']['time']} here, "
                f"but the checkpoint learned jumps of {spec.dt:g} {spec.units.get('time', '')}"
            )
        source, trained = fields["extra"].get(keys.NODE_ATTR_SOURCE), spec.extra.get(keys.NODE_ATTR_SOURCE)
        if trained is not None and source != trained:
            raise DataError(
                f"{path}: node attributes come from atom {source}s here (topology "
                f"{fields['extra'][keys.TOPOLOGY]}) but the checkpoint was trained on {trained}s; "
                "pass --topology with the same kind of topology"
            )
        super().check_fits_spec(dataset, spec)
