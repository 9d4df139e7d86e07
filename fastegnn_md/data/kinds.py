"""Kinds of data in a registry: each kind says how it recognises a path, opens it, trains on it and
whether a checkpoint's spec is its own. Nothing outside this registry asks "which kind is this?".

A kind is a `DataKind` subclass with a ``name``; defining the class registers one instance (as
MDAnalysis' readers register themselves by their ``format`` attribute). The kinds that ship:

=========  ==========================================  =====================================
name       what it reads                               defined in
=========  ==========================================  =====================================
``md``     an MD trajectory file MDAnalysis reads      `fastegnn_md.adapters.mdanalysis.kind`
``sph``    an SPH dataset directory (h5 or tfrecord)   `fastegnn_md.adapters.sph.kind`
``nbody``  an N-body dataset directory (any other      `fastegnn_md.data.nbody_kind`
           directory: its reader says what is missing)
=========  ==========================================  =====================================

This module is core: it imports no adapter, so a kind is known once its module is imported.
`fastegnn_md.datasets` (application layer) imports all of them and is what the CLI uses.
Lookups try kinds by their ``order``; the first that recognises a path wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Optional, Union

from ..conventions import SPLITS
from ..errors import CheckpointError, DataError
from ..graph import FramePair
from .. import spec_keys as keys

PathLike = Union[str, Path]


@dataclass(frozen=True)
class TrainingDefaults:
    """Training settings a kind of data wants when the user gives none (`fastegnn-md train`).

    mmd_weight : λ of Eq. 11; batch_size : graphs per batch; length_scale : the length that
    becomes 1 inside the model (the data's length unit; `fastegnn_md.models.contract`); time_scale :
    the time that does (a number in the data's time unit, or "jump" = the jump's Δt);
    local_distance_weight, local_distance_cutoff (length unit) : the local-distance term
    (`fastegnn_md.losses.local_distance_loss`; weight 0 = off); radial_distance_weight : the
    envelope term (`fastegnn_md.losses.radial_distance_loss`; 0 = off); unroll : pushforward jumps K
    (`fastegnn_md.rollout_training`; 1 = off), used only with backward velocities.
    """

    mmd_weight: float = 0.03
    batch_size: int = 50
    length_scale: float = 1.0
    time_scale: Union[float, str] = 1.0
    local_distance_weight: float = 0.0
    local_distance_cutoff: float = 2.6
    radial_distance_weight: float = 0.0
    unroll: int = 1


#: `Dataset.load`'s name for every split at once.
ALL_SPLITS = "all"


@dataclass
class Dataset:
    """The splits of one dataset and what a checkpoint must remember about it.

    path : what was opened; format : the kind's ``format`` (``spec_keys.*_FORMAT``); spec_fields :
    keyword arguments of `fastegnn_md.checkpoint.DataSpec`. ``splits`` holds the pairs of kinds
    read in one go (MD trajectories); other kinds read a split on each `load` with ``read_split``.
    """

    path: Path
    format: str
    spec_fields: dict[str, Any]
    splits: Optional[dict[str, list[FramePair]]] = None
    read_split: Optional[Callable[[str, Optional[int]], list[FramePair]]] = field(default=None, repr=False)

    def load(self, split: str, max_items: Optional[int] = None) -> list[FramePair]:
        """The pairs of ``split`` ("train", "valid" or "test"; "all": the three, in that order, e.g.
        to score a replica that was never trained on), the first ``max_items`` if given."""
        if split == ALL_SPLITS:
            pairs = [pair for name in SPLITS for pair in self.load(name)]
            return pairs if max_items is None else pairs[:max_items]
        if self.splits is not None:
            if split not in self.splits:
                raise DataError(f"{self.path}: no split {split!r} (splits: {', '.join(self.splits)})")
            pairs = self.splits[split]
            return list(pairs if max_items is None else pairs[:max_items])
        if self.read_split is None:
            raise DataError(f"{self.path}: dataset format {self.format!r} has no reader")
        return self.read_split(split, max_items)


_REGISTRY: list["DataKind"] = []


class DataKind:
    """One kind of data. Subclasses set the class attributes and override the methods.

    name : registry key (``"md"``); order : place in lookups and messages (lower first,
    whatever order the modules were imported in); format : the ``spec_keys.DATASET_FORMAT`` value its specs
    carry; description / plural : how messages name it (``"an MD trajectory file"`` / ``"MD
    trajectory files"``); data_name : the data a checkpoint was trained on (``"an MD
    trajectory"``); training : `TrainingDefaults`; options_class : the type of its reading options.

    Command-line options are declared by flag: ``train_flags`` (train and evaluate) and
    ``rollout_flags`` map each flag a kind accepts to the field of its options it sets;
    ``flag_hints`` gives a hint for a flag of another kind (``{"--frames": "use --jump"}``).
    A flag that only some kinds accept is refused for the others by `check_flags`.
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 100
    format: ClassVar[str] = ""
    description: ClassVar[str] = ""
    plural: ClassVar[str] = ""
    data_name: ClassVar[str] = ""
    training: ClassVar[TrainingDefaults] = TrainingDefaults()
    options_class: ClassVar[type] = type(None)
    train_flags: ClassVar[dict[str, str]] = {}
    rollout_flags: ClassVar[dict[str, str]] = {}
    flag_hints: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            if any(kind.name == cls.name for kind in _REGISTRY):
                raise ValueError(f"a data kind named {cls.name!r} is already registered")
            _REGISTRY.append(cls())
            _REGISTRY.sort(key=lambda kind: kind.order)

    # -- what every kind answers ---------------------------------------------------------------

    def recognises(self, path: Path) -> bool:
        """True if ``path`` holds data of this kind (cheap: names and small files only)."""
        raise NotImplementedError

    def owns_spec(self, spec: Any) -> bool:
        """True if a checkpoint with this DataSpec was trained on data of this kind."""
        return spec.extra.get(keys.DATASET_FORMAT) == self.format

    def make_options(self, values: dict[str, Any], where: str) -> Any:
        """This kind's reading options (an ``options_class`` instance) from ``{field: value}``:
        the fields of the flags it accepts, plus ``cutoff`` and ``progress``. None values and
        fields the options do not have are skipped; `option_value` checks and converts the rest
        (DataError naming ``where``, the data's path)."""
        options = self.options_class()
        for name, value in values.items():
            if value is not None and hasattr(options, name):
                setattr(options, name, self.option_value(name, value, where))
        return options

    def option_value(self, name: str, value: Any, where: str) -> Any:
        """The value of option ``name`` as the options hold it (a kind converts its own here)."""
        return value

    def open(self, path: PathLike, options: Any = None) -> Dataset:
        """Open ``path`` with ``options`` (None: the defaults); one-line DataError on bad input."""
        raise NotImplementedError

    def options_for_spec(self, spec: Any, **reading: Any) -> Any:
        """The options that read data the way a checkpoint with ``spec`` was trained on it;
        ``reading`` holds options that do not change the data (``topology``, ``cache_dir``,
        ``progress``); a kind ignores those it has no use for."""
        raise NotImplementedError

    def check_fits_spec(self, dataset: Dataset, spec: Any) -> None:
        """DataError / CheckpointError if ``dataset`` (opened with `options_for_spec`) does not
        fit a checkpoint with ``spec`` (another jump length, other node attributes, ...)."""
        spec.check_fits(dataset.spec_fields["num_node_attrs"], dataset.spec_fields.get("num_nodes"),
                        where=str(dataset.path))

    def open_for_checkpoint(self, path: PathLike, spec: Any, **reading: Any) -> Dataset:
        """`open` with `options_for_spec`, then `check_fits_spec`."""
        dataset = self.open(path, self.options_for_spec(spec, **reading))
        self.check_fits_spec(dataset, spec)
        return dataset


# --------------------------------------------------------------------------------------------
# Lookups
# --------------------------------------------------------------------------------------------


def registered_kinds() -> tuple[DataKind, ...]:
    """Every registered kind, by ``order``."""
    return tuple(_REGISTRY)


def kind_named(name: str) -> DataKind:
    for kind in _REGISTRY:
        if kind.name == name:
            return kind
    known = ", ".join(kind.name for kind in _REGISTRY) or "none"
    raise KeyError(f"no data kind named {name!r} (registered: {known})")


def describe_path(path: Path) -> str:
    """What ``path`` is, for messages: "does not exist", "is a directory without metadata.json", ..."""
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return "is a directory" + ("" if (path / "metadata.json").is_file() else " without metadata.json")
    return "is a file"


def kind_for_path(path: PathLike, kinds: Optional[Iterable[DataKind]] = None, purpose: str = "") -> DataKind:
    """The first of ``kinds`` (default: every registered kind) that recognises ``path``.

    DataError when none does; the message says what the path is and what ``purpose`` (e.g.
    "rollout") takes.
    """
    path = Path(path)
    candidates = tuple(_REGISTRY if kinds is None else kinds)
    for kind in candidates:
        if kind.recognises(path):
            return kind
    takes = " or ".join(kind.description for kind in candidates)
    raise DataError(f"{path}: {describe_path(path)}; {purpose + ' takes' if purpose else 'expected'} {takes}")


def kind_for_spec(spec: Any, where: str = "checkpoint") -> DataKind:
    """The registered kind whose data a checkpoint with this DataSpec was trained on."""
    for kind in _REGISTRY:
        if kind.owns_spec(spec):
            return kind
    fmt = spec.extra.get(keys.DATASET_FORMAT)
    raise CheckpointError(f"{where}: its data spec names no known kind of data (dataset_format {fmt!r})")


def check_flags(kind: DataKind, given: dict[str, Any], where: str, table: str = "train_flags") -> None:
    """DataError for the first flag in ``given`` ({flag: value}, None = not given) that some
    registered kind accepts (its ``table``: "train_flags" or "rollout_flags") but ``kind`` does
    not: "<flag>: applies to <the kinds that take it>, but <where> is <kind>"."""
    for flag, value in given.items():
        if value is None or flag in getattr(kind, table):
            continue
        takers = [other.plural for other in _REGISTRY if flag in getattr(other, table)]
        if not takers:
            continue  # a flag of no kind: not this check's business
        hint = kind.flag_hints.get(flag)
        raise DataError(
            f"{flag}: applies to {' and '.join(takers)}, but {where} is {kind.description}"
            + (f"; {hint}" if hint else "")
        )
