"""One rollout pipeline for every kind of data; each kind adds a small `RolloutCase`.

`run_rollout(case, checkpoint)`:

1. the case picks and checks the checkpoint (`RolloutCase.select_checkpoint`: is it a model of
   the case's kind? does it fit the data?);
2. a `Predictor` is built, refused if its velocity convention cannot be fed its own outputs;
3. the case reads what it needs (`RolloutCase.prepare`): the start state, the number of jumps,
   the node attributes, the displacement limit and the constraints (SPH walls);
4. `fastegnn_md.rollout.roll_out` makes the jumps, streaming every frame into the case's sink;
   the jump function may be a seeded sample (``jump=``, ``seed=``), the loop does not change;
5. the trivial predictors ("no motion", "constant velocity") start from the same state and obey
   the same constraints;
6. the notes (the case's, the start's, the stop's) and the info every report carries (checkpoint,
   model, convention, stop) are added to the case's own, and the case writes its report.

Units are the checkpoint's (Å and ps for molecular models, the dataset's for SPH).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..conventions import UNPHYSICAL
from ..data.kinds import DataKind, registered_kinds
from ..errors import DataError
from ..io import OutputLock
from ..local_geometry import HeldGeometry
from ..predictor import Predictor
from ..reports.per_jump import MODEL
from ..rollout import (
    TRIVIAL_PREDICTORS,
    Constraint,
    JumpFunction,
    RolloutFrame,
    RolloutResult,
    StartState,
    StopRollout,
    roll_out,
)
from ..rollout import MeanJump, SampledJump, check_rollout_safe

PathLike = Union[str, Path]


@dataclass
class RolloutOutputs:
    """Files a rollout wrote, the report it made, and why it stopped early (or None)."""

    predicted: Path
    report_files: dict[str, Path]
    report: dict[str, Any]
    stopped: Optional[str]


@dataclass
class RolloutRequest:
    """What every rollout is asked, whatever the data (None: the case's default).

    start : start frame; jumps : number of learned jumps; out : the predicted trajectory file;
    report_dir : the report's directory; max_displacement : the per-jump displacement of one
    atom or particle that stops the rollout, in the data's length unit; unphysical : what a frame
    outside the physical range does (`UNPHYSICAL`: ``"stop"`` ends the rollout before it, as a
    diverging prediction does; ``"warn"`` keeps going with a warning and a note).
    """

    start: Optional[int] = None
    jumps: Optional[int] = None
    out: Optional[PathLike] = None
    report_dir: Optional[PathLike] = None
    max_displacement: Optional[float] = None
    unphysical: str = "stop"

    def __post_init__(self) -> None:
        if self.unphysical not in UNPHYSICAL:
            raise DataError(f"unphysical must be one of {', '.join(UNPHYSICAL)}, got {self.unphysical!r}")

    @classmethod
    def from_cli(cls, args: Any) -> "RolloutRequest":
        """From the `fastegnn-md rollout` arguments (argparse namespace)."""
        return cls(args.start, args.jumps, args.out, args.report, args.max_displacement, args.unphysical)


class FrameSink(ABC):
    """Where a rollout's frames go as they are made (a trajectory file, arrays for a file)."""

    @abstractmethod
    def write(self, frame: RolloutFrame) -> None:
        """Store one frame; raise `fastegnn_md.rollout.StopRollout` if it cannot be stored."""

    def close(self) -> None:
        """Release open files (also after an error)."""

    def finish(self, result: RolloutResult) -> None:
        """After the last frame: write what is written whole (arrays, files of all frames)."""


_CASES: dict[str, type["RolloutCase"]] = {}


class RolloutCase(ABC):
    """What one kind of data adds to the rollout pipeline.

    Subclasses set ``kind`` (the `DataKind` class whose data they roll out; defining the
    subclass registers it for that kind) and ``default_checkpoint`` (a shipped model name, or
    None when ``--checkpoint`` is required), and fill, in `prepare`: ``start``, ``jumps``,
    ``node_attrs``, ``max_displacement``, ``constrain``, ``report_dir`` and ``out`` (the
    predicted trajectory), which the pipeline locks while the rollout writes them. ``notes`` collects the notes the
    case makes along the way (in order).
    """

    kind: ClassVar[type[DataKind]]
    default_checkpoint: ClassVar[Optional[str]] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _CASES[cls.kind.name] = cls

    def __init__(self, request: Optional[RolloutRequest] = None) -> None:
        self.request = request or RolloutRequest()
        self.notes: list[str] = []
        self.start: StartState
        self.jumps: int = 0
        self.node_attrs: Optional[np.ndarray] = None
        self.max_displacement: float = float("inf")
        self.constrain: Optional[Constraint] = None
        # Node pairs (P, 2) a sampled jump keeps at their start distances (topology known: peptide ω).
        self.held_pairs: Optional[np.ndarray] = None
        self.checkpoint_name: str = ""
        self.report_dir: Path = Path(".")
        self.out: Path = Path(".")

    @classmethod
    def from_cli(cls, args: Any) -> "RolloutCase":
        """The case for the `fastegnn-md rollout` arguments ``args`` (argparse namespace)."""
        raise NotImplementedError

    @abstractmethod
    def select_checkpoint(self, checkpoint: Optional[PathLike]) -> Checkpoint:
        """Load ``checkpoint`` (None: ``default_checkpoint``), refuse one of another kind; sets
        ``checkpoint_name`` (what the report calls it)."""

    @abstractmethod
    def prepare(self, predictor: Predictor, progress: bool) -> None:
        """Read the data and fill ``start``, ``jumps``, ``node_attrs``, ``max_displacement``,
        ``constrain`` and, where the topology says which, ``held_pairs`` (one-line DataError on bad input)."""

    @abstractmethod
    def open_sink(self, predictor: Predictor) -> FrameSink:
        """The sink of this rollout's frames (it may write the start frame at once)."""

    def frame_problem(self, frame: RolloutFrame) -> Optional[str]:
        """Why a frame leaves the physical range (the rollout then stops before it, like a
        diverging one), or None. Default: no check beyond the loop's own."""
        return None

    def closing_notes(self) -> list[str]:
        """Notes that come after the stop note."""
        return []

    @abstractmethod
    def info(self, sink: FrameSink) -> dict[str, Any]:
        """The case's part of ``report["info"]`` (what was read and written)."""

    @abstractmethod
    def write_report(self, predictions: dict[str, np.ndarray], notes: list[str], info: dict[str, Any],
                     progress: bool) -> tuple[dict[str, Any], dict[str, Path]]:
        """Compare, write the report; returns (report, files)."""

    @abstractmethod
    def outputs(self, sink: FrameSink, report: dict[str, Any], files: dict[str, Path],
                stopped: Optional[str]) -> RolloutOutputs:
        """What `run_rollout` returns for this case."""

    def summary_lines(self, outputs: RolloutOutputs) -> list[str]:
        """What the CLI prints on stdout after the rollout (before the report's path)."""
        return [f"predicted trajectory: {outputs.predicted}"]


def rollout_case_for(kind: DataKind) -> type[RolloutCase]:
    """The registered case for data of ``kind``; DataError if that kind has no rollout."""
    if kind.name not in _CASES:
        takers = " or ".join(case.kind.description for case in _CASES.values())
        raise DataError(f"{kind.plural} have no rollout; rollout takes {takers}")
    return _CASES[kind.name]


def rollout_kinds() -> list[DataKind]:
    """The registered kinds of data that have a rollout case, in registration order."""
    return [kind for kind in registered_kinds() if kind.name in _CASES]


def run_rollout(
    case: RolloutCase,
    checkpoint: Optional[PathLike] = None,
    device: str = "cpu",
    progress: bool = True,
    jump: Optional[JumpFunction] = None,
    seed: Optional[int] = 0,
    sample: bool = False,
    hold_geometry: bool = False,
    precision: str = "full",
) -> RolloutOutputs:
    """Roll a checkpoint out on the case's data and report against the reference (module docstring).

    ``sample``: each jump is drawn from the checkpoint's spread (`SampledJump`, seeded by
    ``seed``) instead of the model's mean. ``hold_geometry`` (molecular checkpoints, mean jumps):
    each jump keeps its start's bonds, bond angles and, where the topology names them, peptide
    planes (`fastegnn_md.local_geometry.HeldGeometry`; sampled jumps of a molecular spread always
    do). ``jump`` overrides both."""
    if sample and hold_geometry:
        raise DataError("--hold-geometry: sampled jumps (--sample) already keep the start's bonds and angles; "
                        "pass one of the two")
    ckpt = case.select_checkpoint(checkpoint)
    if hold_geometry and not ckpt.data_spec.is_molecular:
        raise DataError(f"--hold-geometry: {ckpt.model_name or 'the checkpoint'} is not a molecular model; "
                        "only molecules have bonds to hold")
    predictor = Predictor(ckpt.build_model(), ckpt.data_spec, ckpt.model_name, device, checkpoint=ckpt,
                          precision=precision)
    check_rollout_safe(predictor)
    if sample:  # refuse a checkpoint without a spread before reading the data
        predictor.require_spread()
    case.prepare(predictor, progress)
    drawn_by_model = model_samples(predictor)
    if drawn_by_model and seed is not None:  # the model draws its own noise (torch's generator):
        torch.manual_seed(seed)                # seeded as the loop's generator is, so a rerun repeats it
    if jump is None and sample:
        jump = SampledJump(predictor, case.held_pairs)
    elif jump is None and hold_geometry:
        jump = MeanJump(predictor, HeldGeometry(held_pairs=case.held_pairs))
    if Path(case.report_dir).exists() and not Path(case.report_dir).is_dir():
        raise DataError(f"{case.report_dir}: exists and is not a directory; the report needs a directory")
    with ExitStack() as locks:
        for target, is_directory in output_locks(case):
            locks.enter_context(OutputLock(target, is_directory, "rollout"))
        sink = case.open_sink(predictor)

        def on_frame(frame: RolloutFrame) -> None:
            problem = case.frame_problem(frame)
            if problem:
                raise StopRollout(problem)
            sink.write(frame)

        try:
            result = roll_out(
                predictor, case.start, case.jumps, case.node_attrs, case.max_displacement, on_frame=on_frame,
                progress=progress, constrain=case.constrain, jump=jump, seed=seed,
            )
        finally:
            sink.close()
        sink.finish(result)
        outputs = _report(case, ckpt, predictor, sink, result, progress, describe_jump(jump, seed, drawn_by_model))
    return outputs


def model_samples(predictor: Predictor) -> int:
    """The noise channels of a model whose jump is a sample (`FastEGNN`'s ``noise_channels``), else 0."""
    return int(getattr(predictor.model, "noise_channels", 0) or 0)


def output_locks(case: "RolloutCase") -> list[tuple[Path, bool]]:
    """What a rollout locks while it writes: its report directory, and its predicted trajectory
    when that lies elsewhere (two runs on either would mix their files)."""
    report_dir = Path(case.report_dir)
    locks = [(report_dir, True)]
    out = Path(case.out)
    if out.resolve().parent != report_dir.resolve():
        locks.append((out, False))
    return locks


def describe_jump(jump: Optional[JumpFunction], seed: Optional[int], noise_channels: int = 0) -> str:
    """How the rollout's jumps were made, for its report: the mean, or samples and their seed;
    ``noise_channels`` > 0 when the model itself samples (`model_samples`)."""
    plain = jump is None or (isinstance(jump, MeanJump) and jump.held_geometry is None)
    if plain:
        text = "the model's mean"
    elif isinstance(jump, MeanJump):
        text = "the model's mean, with each start's bonds, bond angles and peptide planes held"
    elif isinstance(jump, SampledJump):
        text = f"sampled from the checkpoint's spread, seed {seed}"
    else:
        text = type(jump).__name__
    if not noise_channels:
        return text
    drawn = f"{noise_channels} noise channels, seed {seed}"
    return f"each a sample of the model ({drawn})" if plain else f"{text}, around samples of the model ({drawn})"


def _report(case: "RolloutCase", ckpt: Checkpoint, predictor: Predictor, sink: FrameSink, result: RolloutResult,
            progress: bool, jumps: str = "the model's mean") -> RolloutOutputs:
    """Steps 5 and 6 of the module docstring: the trivial predictors, notes, info, the report."""
    shape = np.shape(case.start.positions)
    predictions = {MODEL: np.array([frame.positions for frame in result.frames]).reshape(-1, *shape)}
    for name, predictor_fn in TRIVIAL_PREDICTORS.items():
        predictions[name] = constrained(predictor_fn(case.start, case.jumps, predictor.dt), case.constrain)
    stopped = result.stop.reason if result.stop else None
    notes = list(case.notes)
    if case.start.note:
        notes.append(case.start.note)
    if stopped:
        notes.append(f"rollout stopped: {stopped}; the {len(result.frames)} frames before it are kept")
    notes += case.closing_notes()
    spec = predictor.spec
    info = {
        **case.info(sink),
        "checkpoint": str(case.checkpoint_name),
        "checkpoint_file": str(ckpt.path) if ckpt.path else None,
        "model": ckpt.model_name,
        "velocity_convention": spec.velocity_convention,
        "jumps": jumps,
        "stopped": stopped,
    }
    report, files = case.write_report(predictions, notes, info, progress)
    return case.outputs(sink, report, files, stopped)


def constrained(frames: np.ndarray, constrain: Optional[Constraint]) -> np.ndarray:
    """(K, N, 3) frames of a trivial predictor with jump k's constraint applied to frame k."""
    if constrain is None:
        return frames
    return np.stack([constrain(k, frame) for k, frame in enumerate(frames, start=1)]) if len(frames) else frames
