"""Self-describing checkpoints: one file that restores a model and says what data it fits.

Layout (a plain dict, loadable with ``torch.load(path, weights_only=True)``)::

    kind               "fastegnn-md checkpoint"
    format_version     int (FORMAT_VERSION)
    package_version    fastegnn_md.__version__ that wrote it
    model              {"name": registry name, "hparams": constructor kwargs}
    state_dict         model weights
    data_spec          DataSpec.as_dict(): units, jump dt, frame stride, velocity convention,
                       cutoff, edge-drop rate, selection, node-feature recipe, ...
    training           summary: dataset, epochs, best valid MSE, loss settings, ...
    resume             optional trainer state (optimizer, RNG states, epoch counters)

Writes are atomic (temporary file in the same directory, then rename), so an interrupted
save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from . import __version__
from . import spec_keys as keys
from .conventions import VELOCITY_CONVENTIONS
from .errors import CheckpointError
from .graph import FEATURE_RECIPE
from .io import write_atomically
from .models import JumpModel, build_model

FORMAT_VERSION = 1
CHECKPOINT_KIND = "fastegnn-md checkpoint"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"

# Keys of the checkpoint dict (named once, used everywhere).
KEY_KIND = "kind"
KEY_FORMAT = "format_version"
KEY_PACKAGE = "package_version"
KEY_MODEL = "model"
KEY_STATE = "state_dict"
KEY_SPEC = "data_spec"
KEY_TRAINING = "training"
KEY_RESUME = "resume"



@dataclass
class DataSpec:
    """What a model was trained on, so it is used on data of the same kind.

    units : {"length": ..., "time": ...}; "Å"/"ps" for MD, "dimensionless" for N-body; SPH:
        dimensionless lengths, time in the unit of the dataset's frame interval ("s" when its
        metadata says so, else "dimensionless"; docs/data-formats.md).
    dt : length of one learned jump in the time unit.
    frame_stride : jump length in frames of the source trajectory.
    velocity_convention : "physical", "backward" or "forward" (docs/architecture.md).
    cutoff : radius-graph cutoff in the length unit, None for fully connected graphs.
    drop_rate : fraction of the longest edges dropped per graph.
    num_node_attrs : width F of FramePair.node_attrs.
    num_nodes : nodes per graph the model was trained on (None if any size is fine).
    selection : atom selection string for molecular data (None otherwise).
    feature_recipe : how node/edge features are built (graph.FEATURE_RECIPE).
    normalisation : constants applied to inputs before the model; empty = raw features.
    gravity_axis : unit vector of the model's learned gravity term (SPH), None for no term; the
        same as the model's ``hparams["gravity_axis"]``.
    extra : adapter-specific metadata (e.g. default node attributes, topology).
    """

    units: dict[str, str] = field(default_factory=lambda: {"length": "dimensionless", "time": "dimensionless"})
    dt: float = 1.0
    frame_stride: int = 1
    velocity_convention: str = "physical"
    cutoff: Optional[float] = None
    drop_rate: float = 0.0
    num_node_attrs: int = 1
    num_nodes: Optional[int] = None
    selection: Optional[str] = None
    feature_recipe: str = FEATURE_RECIPE
    normalisation: dict[str, float] = field(default_factory=dict)
    gravity_axis: Optional[list[float]] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.velocity_convention not in VELOCITY_CONVENTIONS:
            raise ValueError(
                f"velocity_convention must be one of {VELOCITY_CONVENTIONS}, got {self.velocity_convention!r}"
            )

    @property
    def is_molecular(self) -> bool:
        """True for molecular data (Å and ps): the one test of "is this a molecular model?" that
        the MD rollout, the ASE calculator and the OpenMM stepper share."""
        return self.units.get("length") == "Å" and self.units.get("time") == "ps"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DataSpec":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def train_frames_by_file(self) -> dict[str, list[int]]:
        """The frames the training split read, ``{file name: [first, last]}`` (``extra`` key
        `spec_keys.TRAIN_FRAMES`; checkpoints written before replicas existed hold one
        ``[first, last]`` for their single trajectory file); {} when the data has no frame record
        (SPH, N-body)."""
        frames = self.extra.get(keys.TRAIN_FRAMES)
        if isinstance(frames, dict):
            return {str(name): [int(frames[name][0]), int(frames[name][1])] for name in frames}
        names = list(self.extra.get(keys.TRAJECTORY, []))
        if frames is not None and len(names) == 1:
            return {str(names[0]): [int(frames[0]), int(frames[1])]}
        return {}

    def check_fits(self, num_node_attrs: int, num_nodes: Optional[int] = None, where: str = "data") -> None:
        """Raise CheckpointError if data with this many attributes/nodes cannot use the model."""
        if num_node_attrs != self.num_node_attrs:
            raise CheckpointError(
                f"{where}: has {num_node_attrs} node attributes per node but the checkpoint "
                f"was trained with {self.num_node_attrs}"
            )
        if self.num_nodes is not None and num_nodes is not None and num_nodes != self.num_nodes:
            raise CheckpointError(
                f"{where}: has {num_nodes} nodes but the checkpoint was trained on "
                f"{self.num_nodes}-node graphs (selection {self.selection!r})"
            )


@dataclass
class Checkpoint:
    model_name: str
    hparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    data_spec: DataSpec
    training: dict[str, Any]
    format_version: int = FORMAT_VERSION
    package_version: str = __version__
    resume: Optional[dict[str, Any]] = None
    path: Optional[Path] = None

    def build_model(self) -> JumpModel:
        """The model with these weights, in eval mode, float32 on CPU."""
        where = self.path or "checkpoint"
        try:
            model = build_model(self.model_name, **self.hparams)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{where}: cannot build model {self.model_name!r} ({exc})") from None
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            # torch lists every missing / unexpected / misshapen tensor on its own line: keep them
            # all, on one line (the first few, and how many more).
            details = [line.strip() for line in str(exc).strip().splitlines()[1:] if line.strip()]
            shown = "; ".join(details[:4]) + (f"; ... ({len(details) - 4} more)" if len(details) > 4 else "")
            raise CheckpointError(
                f"{where}: weights do not fit model {self.model_name!r}: {shown or str(exc).strip()}"
            ) from None
        return model.eval()


def save_checkpoint(
    path: Union[str, Path],
    model_name: str,
    hparams: dict[str, Any],
    model: torch.nn.Module,
    data_spec: DataSpec,
    training: Optional[dict[str, Any]] = None,
    resume: Optional[dict[str, Any]] = None,
) -> Path:
    """Write a checkpoint atomically; returns its path."""
    path = Path(path)
    payload = {
        KEY_KIND: CHECKPOINT_KIND,
        KEY_FORMAT: FORMAT_VERSION,
        KEY_PACKAGE: __version__,
        KEY_MODEL: {"name": model_name, "hparams": dict(hparams)},
        KEY_STATE: {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        KEY_SPEC: data_spec.as_dict(),
        KEY_TRAINING: dict(training or {}),
    }
    if resume is not None:
        payload[KEY_RESUME] = resume
    write_atomically(path, lambda handle: torch.save(payload, handle))
    return path


def resolve_checkpoint(name_or_path: Union[str, Path]) -> Path:
    """A path as given, or the shipped checkpoint of that name (``fastegnn_md/pretrained``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = PRETRAINED_DIR / f"{name_or_path}.pt"
    if shipped.exists():
        return shipped
    names = sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))
    hint = f"; shipped models: {', '.join(names)}" if names else ""
    raise CheckpointError(f"{name_or_path}: no such checkpoint file or shipped model name{hint}")


def load_checkpoint(name_or_path: Union[str, Path]) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True``; CheckpointError explains what is wrong."""
    path = resolve_checkpoint(name_or_path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not _is_torch_file(path):
        raise CheckpointError(f"{path}: not a fastegnn-md checkpoint (not a file torch.save wrote)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            reason = "it holds Python objects other than tensors and plain data"
        else:
            reason = "torch.load cannot read it"
        raise CheckpointError(f"{path}: not a fastegnn-md checkpoint ({reason})") from None
    except Exception:  # torch raises many types for foreign files (zip errors, EOF, ...)
        raise CheckpointError(f"{path}: not a fastegnn-md checkpoint (torch.load cannot read it)") from None
    if not isinstance(payload, dict) or payload.get(KEY_KIND) != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a fastegnn-md checkpoint (no '{KEY_KIND}' marker)")
    version = payload.get(KEY_FORMAT)
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: checkpoint has no valid format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this fastegnn-md "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade fastegnn-md"
        )
    for key, kind in ((KEY_MODEL, dict), (KEY_SPEC, dict), (KEY_STATE, dict)):
        if not isinstance(payload.get(key), kind):
            found = "missing" if key not in payload else f"a {type(payload[key]).__name__}"
            raise CheckpointError(f"{path}: not a fastegnn-md checkpoint: its {key!r} is {found}, not a dict")
    try:
        model = payload[KEY_MODEL]
        return Checkpoint(
            model_name=model["name"],
            hparams=dict(model["hparams"]),
            state_dict=payload[KEY_STATE],
            data_spec=DataSpec.from_dict(payload[KEY_SPEC]),
            training=dict(payload.get(KEY_TRAINING, {})),
            format_version=version,
            package_version=str(payload.get(KEY_PACKAGE, "unknown")),
            resume=payload.get(KEY_RESUME),
            path=path,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: checkpoint is incomplete or malformed ({exc})") from None


#: First bytes of the two formats torch.save writes: a zip archive (the default since torch 1.6)
#: and the legacy format (a pickle; protocol 2 or above starts with 0x80).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _is_torch_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4)
    return any(head.startswith(magic) for magic in _TORCH_MAGIC)
