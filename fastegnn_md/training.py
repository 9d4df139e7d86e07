"""Training and evaluation: epochs, early stopping, checkpoints, resume, metrics log.

A run directory holds
    best.pt        checkpoint with the lowest validation MSE so far (for a run trained by the
                   energy score: the lowest validation energy score)
    last.pt        checkpoint after the last finished epoch, with the trainer state to resume
    metrics.jsonl  one JSON object per finished epoch
An interrupted run started again with the same directory continues after the last finished
epoch and ends with the same weights as an uninterrupted run (same seed, CPU).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from . import spec_keys as keys
from .checkpoint import DataSpec, load_checkpoint, save_checkpoint
from .errors import FastEGNNError, FastEGNNWarning
from .graph import FramePair, GraphBatch, collate, feature_dims, local_pairs
from .io import write_atomically
from .losses import (box_loss, energy_score, frame_density_loss, gyration_loss, kinetic_energy_loss,
                     local_distance_loss, mmd_loss, moving_subset, position_mse, radial_distance_loss)
from .models import JumpModel, build_model, model_hparams
from .models.fastegnn import NOISE_GATES, NOISE_INPUTS, VIRTUAL_INITS
from .models.precision import check_precision, precision_context
from .rollout_training import RolloutTraining
from .geometry import box_array, shrunk_box, unit_gravity_axis

DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: `TrainConfig.time_scale` value meaning "the data's jump Δt".
JUMP_TIME_SCALE = "jump"
BEST, LAST, METRICS = "best.pt", "last.pt", "metrics.jsonl"
#: `TrainConfig.position_loss` choices: the paper's MSE, or the energy score of a sampled jump.
POSITION_LOSSES = ("mse", "energy-score")
EXTENDABLE = ("epochs", "patience")  # settings a resumed run may change


@dataclass
class TrainConfig:
    """Everything that decides a training run (stored in every checkpoint it writes).

    sigma is in the data's length unit; mmd_weight is lambda of Eq. 11 (0 disables MMD, the
    paper's "w/o MMD" ablation); patience is the number of epochs without a better validation
    MSE (energy score, for a run trained by it) before early stopping; grad_clip, if set, caps
    the global gradient norm of every step (off by default, as in the paper; it guards against
    the early divergence FastEGNN<1,0> showed in benchmarks/RESULTS.md). gravity_axis (a
    3-vector, stored normalised; None = no term) switches on the models' learned gravity term
    (`fastegnn_md.models.contract.JumpModel`); the checkpoint's data spec records it. The CLI
    takes it from the dataset (SPH: metadata or −y).
    time_scale (the data's time unit, or "jump" = the data's jump Δt; default 1) is the time that
    becomes 1 inside the model (`JumpModel.set_time_scale`): the velocities it sees are then the
    constant-velocity displacement over that time, so the velocity term starts at the right size.
    input_noise (length unit; 0 = off) and unroll (K jumps; 1 = off) train for rollouts
    (`fastegnn_md.rollout_training`: random-walk noise on the velocity history, pushforward);
    noise_correction γ (0..1, default 0 = GNS) is the fraction of that noise's position offset the
    model is taught to take back (the target follows the input by 1 − γ of it).
    local_distance_weight (0 = off) adds that multiple of `local_distance_loss` over the pairs
    closer than local_distance_cutoff (length unit) in the input frame, so repeated jumps keep
    bonds and angles instead of shrinking them toward the mean structure (in a run trained by the
    energy score, over the two samples: the pair distances' variogram score, which trains how the
    noise of neighbours is correlated). radial_distance_weight
    (0 = off) adds that multiple of `radial_distance_loss` (each node's distance to its graph's
    centroid), so repeated jumps keep the envelope (radius of gyration) as well; gyration_weight
    (0 = off) adds that multiple of `gyration_loss` (each graph's radius of gyration), which sees
    the few-hundredths-of-an-Å shrinkage per jump that the per-node terms average away; box_weight
    (0 = off) adds that multiple of `box_loss` (how far predicted nodes lie outside the data's box,
    ``spec.extra["bounds"]``: SPH data), so a jump is taught that water does not leave the box;
    box_margin (length unit, default 0) moves that box's faces inwards, so the term already
    acts on water closer to a wall than the data ever comes (SPH water keeps about one particle
    radius from the wall particles' centres);
    energy_weight (0 = off) adds that multiple of `kinetic_energy_loss` (the log-ratio of each
    graph's predicted to observed RMS displacement over the jump), against a jump that damps a
    splash or jitters where the data rest.
    density_weight (0 = off) adds that multiple of `density_loss` (each predicted particle's
    neighbour density within density_radius, length unit, default the graph's cutoff, against the
    target frame's), so repeated jumps do not compress water into clumps.
    ema_decay (0 = off; e.g. 0.99) keeps an exponential moving average of the weights over the
    optimizer steps (`WeightAverage`, as NequIP and MACE train), validates and saves *it*: the
    small biases that one-jump MSE barely sees (a protein's Rg drift per jump) then stop
    depending on where the last steps happened to leave the weights. virtual_init
    ("centroid" as in the paper, or "weighted") is how FastEGNN's virtual nodes start
    (`fastegnn_md.models.fastegnn.FastEGNN.virtual_start`); other models ignore it. init (None =
    a seeded random start) is a checkpoint (path or shipped name) whose weights start the run: fine-tuning,
    e.g. rollout training (`unroll`, `input_noise`) from a model trained on single jumps, as
    LagrangeBench switches its pushforward on after a first phase. Its model and hyperparameters
    must be this run's, its data of the same kind (`init_weights`). precision ("full", or
    "bf16-mixed": the training forward passes' matmuls in bfloat16, `fastegnn_md.models.precision`;
    float32 only) is how the training steps compute; validation, and so the choice of best.pt,
    runs in full precision, and the weights are float32 either way.
    noise_channels (0 = the paper's deterministic jump; FastEGNN only) makes the model's jump a
    sample (`FastEGNN`'s noise channels, entering as ``noise_into`` says: "coordinates" or
    "features", multiplied by each node's speed if ``noise_gate`` is "speed", summed over graph
    neighbours ``noise_smoothing`` times); position_loss ("mse", or "energy-score" for a sampled
    jump: `energy_score` of two samples per example, which trains the spread as well as the
    centre) is the position term of the loss. A sampled jump is validated on noise drawn from a
    generator seeded with ``seed`` (the same draws every epoch, and training's draws untouched);
    its validation MSE is that of one sample, which its spread adds to, so a run trained by the
    energy score keeps as best.pt the epoch with the lowest validation energy score
    (`evaluate_energy_score`), and its ``best_valid_mse`` is that epoch's MSE.
    """

    model: str = "fastegnn"
    hidden: int = 64
    layers: int = 4
    virtual_nodes: int = 3
    cutoff: Optional[float] = None
    drop_rate: float = 0.0
    sigma: float = 1.5
    mmd_weight: float = 0.03
    mmd_samples: int = 100
    lr: float = 5e-4
    weight_decay: float = 1e-12
    batch_size: int = 50
    epochs: int = 100
    patience: int = 50
    grad_clip: Optional[float] = None
    length_scale: float = 1.0
    time_scale: Union[float, str] = 1.0
    gravity_axis: Optional[list[float]] = None
    input_noise: float = 0.0
    noise_correction: float = 0.0
    unroll: int = 1
    local_distance_weight: float = 0.0
    local_distance_cutoff: float = 2.6
    radial_distance_weight: float = 0.0
    gyration_weight: float = 0.0
    box_weight: float = 0.0
    box_margin: float = 0.0
    energy_weight: float = 0.0
    density_weight: float = 0.0
    density_radius: Optional[float] = None
    ema_decay: float = 0.0
    virtual_init: str = "centroid"
    noise_channels: int = 0
    noise_into: str = "coordinates"
    noise_gate: str = "none"
    noise_smoothing: int = 0
    position_loss: str = "mse"
    init: Optional[str] = None
    seed: int = 0
    dtype: str = "float32"
    precision: str = "full"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.virtual_init not in VIRTUAL_INITS:
            raise ValueError(f"virtual_init must be one of {list(VIRTUAL_INITS)}, got {self.virtual_init!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        check_precision(self.precision)
        if self.position_loss not in POSITION_LOSSES:
            raise ValueError(f"position_loss must be one of {list(POSITION_LOSSES)}, got {self.position_loss!r}")
        if self.noise_channels < 0:
            raise ValueError(f"noise_channels must be >= 0, got {self.noise_channels}")
        if self.position_loss == "energy-score" and self.noise_channels == 0:
            raise ValueError("position_loss energy-score scores sampled jumps: it needs noise_channels > 0")
        if self.noise_into not in NOISE_INPUTS:
            raise ValueError(f"noise_into must be one of {list(NOISE_INPUTS)}, got {self.noise_into!r}")
        if self.noise_gate not in NOISE_GATES:
            raise ValueError(f"noise_gate must be one of {list(NOISE_GATES)}, got {self.noise_gate!r}")
        if self.noise_smoothing < 0:
            raise ValueError(f"noise_smoothing must be >= 0, got {self.noise_smoothing}")
        if self.noise_smoothing > 0 and self.noise_channels == 0:
            raise ValueError("noise_smoothing smooths a sampled jump's noise: it needs noise_channels > 0")
        if self.noise_gate != "none" and self.noise_channels == 0:
            raise ValueError(f"noise_gate {self.noise_gate} gates a sampled jump's noise: it needs noise_channels > 0")
        if self.noise_channels > 0 and not model_hparams(self.model, noise_channels=1):
            raise ValueError(f"noise_channels: model {self.model} has no sampled jump (fastegnn and global_nodes do)")
        if self.precision != "full" and self.dtype != "float32":
            raise ValueError(f"precision {self.precision} needs dtype float32, got {self.dtype}")
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ValueError(f"drop_rate must be in [0, 1], got {self.drop_rate}")
        for name in ("batch_size", "epochs", "patience", "mmd_samples", "hidden", "layers", "virtual_nodes", "unroll"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cutoff is not None and not (math.isfinite(self.cutoff) and self.cutoff > 0):
            raise ValueError(f"cutoff must be a positive length, got {self.cutoff}")
        if not (math.isfinite(self.length_scale) and self.length_scale > 0):
            raise ValueError(f"length_scale must be a positive length, got {self.length_scale}")
        if self.time_scale != JUMP_TIME_SCALE and not (
            isinstance(self.time_scale, (int, float)) and math.isfinite(self.time_scale) and self.time_scale > 0
        ):
            raise ValueError(f"time_scale must be a positive time or {JUMP_TIME_SCALE!r}, got {self.time_scale!r}")
        if not (math.isfinite(self.local_distance_cutoff) and self.local_distance_cutoff > 0):
            raise ValueError(f"local_distance_cutoff must be a positive length, got {self.local_distance_cutoff}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a positive length, got {self.sigma}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive number, got {self.grad_clip}")
        if self.gravity_axis is not None:
            self.gravity_axis = unit_gravity_axis(self.gravity_axis)
        if not (math.isfinite(self.noise_correction) and 0.0 <= self.noise_correction <= 1.0):
            raise ValueError(f"noise_correction must be in [0, 1], got {self.noise_correction}")
        if self.noise_correction > 0 and self.input_noise == 0:
            raise ValueError("noise_correction takes back part of the input noise: it needs input_noise > 0")
        if self.box_margin > 0 and self.box_weight == 0:
            raise ValueError("box_margin moves the box of the box term: it needs box_weight > 0")
        if self.density_radius is not None and not (math.isfinite(self.density_radius) and self.density_radius > 0):
            raise ValueError(f"density_radius must be a positive length, got {self.density_radius}")
        if self.density_weight > 0 and self.density_radius is None and self.cutoff is None:
            raise ValueError("density_weight needs a density_radius (the graph has no cutoff to default to)")
        if not (math.isfinite(self.ema_decay) and 0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("lr", "weight_decay", "mmd_weight", "input_noise", "local_distance_weight",
                     "radial_distance_weight", "gyration_weight", "box_weight", "box_margin", "energy_weight",
                     "density_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def resolve_time_scale(time_scale: Union[float, str], dt: float) -> float:
    """The model's time scale T: ``"jump"`` = the data's jump Δt (its time unit), else the number."""
    return float(dt) if time_scale == JUMP_TIME_SCALE else float(time_scale)


def make_model(config: TrainConfig, num_node_attrs: int, dt: float = 1.0) -> tuple[JumpModel, dict[str, Any]]:
    """Build the configured model (seeded) and return it with its constructor hparams.

    dt : the jump in the data's time unit (initialises Linear's alpha at constant velocity, in
        the velocities the model sees: v·T/L with T the time scale)."""
    node_features, edge_features = feature_dims(num_node_attrs)
    time_scale = resolve_time_scale(config.time_scale, dt)
    hparams = model_hparams(
        config.model,
        node_features=node_features,
        edge_features=edge_features,
        hidden=config.hidden,
        layers=config.layers,
        virtual_nodes=config.virtual_nodes,
        dt=dt / time_scale,
    )
    if config.length_scale != 1.0:  # only then, so N-body checkpoints keep their hparams unchanged
        hparams["length_scale"] = config.length_scale
    if time_scale != 1.0:  # likewise
        hparams["time_scale"] = time_scale
    if config.gravity_axis is not None:  # likewise: no key = no gravity term (older checkpoints)
        hparams["gravity_axis"] = list(config.gravity_axis)
    if config.virtual_init != "centroid":  # likewise: no key = the paper's start; kept by models that take it
        hparams.update(model_hparams(config.model, virtual_init=config.virtual_init))
    if config.noise_channels > 0:  # likewise: no key = a deterministic jump
        hparams["noise_channels"] = config.noise_channels
        if config.noise_into != "coordinates":
            hparams["noise_into"] = config.noise_into
        if config.noise_gate != "none":
            hparams["noise_gate"] = config.noise_gate
        if config.noise_smoothing > 0:
            hparams["noise_smoothing"] = config.noise_smoothing
    torch.manual_seed(config.seed)
    return build_model(config.model, **hparams), hparams


#: DataSpec fields a fine-tuning start (`TrainConfig.init`) must share with the run's data: the
#: model's inputs and outputs mean the same only if these agree.
INIT_SPEC_FIELDS = ("units", "dt", "velocity_convention", "num_node_attrs", "feature_recipe", "normalisation",
                    "gravity_axis")


def init_weights(model: JumpModel, model_name: str, hparams: dict[str, Any], spec: DataSpec, path: str) -> DataSpec:
    """Load the weights of checkpoint ``path`` into ``model`` (a fine-tuning start) and return
    ``spec`` with the start's training frames added to its own, so rollout reports still mark
    every frame the weights have seen. Raises FastEGNNError, naming the checkpoint, when its
    model, hyperparameters or data kind differ from this run's."""
    try:
        ckpt = load_checkpoint(path)
    except FastEGNNError as exc:
        raise FastEGNNError(f"--init: {exc}") from None
    where = f"--init {path}"
    if ckpt.model_name != model_name:
        raise FastEGNNError(f"{where}: is a {ckpt.model_name} model, this run trains {model_name}")
    changed = sorted(k for k in set(hparams) | set(ckpt.hparams) if hparams.get(k) != ckpt.hparams.get(k))
    # A deterministic start for a sampled jump: its noise heads start at zero (`FastEGNNLayer`),
    # so the new model begins as exactly the start.
    adds_noise = (bool(changed) and set(changed) <= {"noise_channels", "noise_into", "noise_gate", "noise_smoothing"}
                  and not ckpt.hparams.get("noise_channels"))
    if changed and not adds_noise:
        shown = ", ".join(f"{k} {ckpt.hparams.get(k)!r} there, {hparams.get(k)!r} here" for k in changed)
        raise FastEGNNError(f"{where}: model settings differ ({shown}); train with the checkpoint's settings")
    theirs = ckpt.data_spec
    for name in INIT_SPEC_FIELDS:
        if getattr(theirs, name) != getattr(spec, name):
            raise FastEGNNError(
                f"{where}: was trained on data with {name} {getattr(theirs, name)!r}, this data has "
                f"{getattr(spec, name)!r}"
            )
    if adds_noise:
        missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
        if unexpected or any(".noise_head." not in key and key != "noise_embedding.weight" for key in missing):
            raise FastEGNNError(f"{where}: its weights do not fit this model ({len(missing)} missing, "
                                f"{len(unexpected)} unexpected)")
    else:
        model.load_state_dict(ckpt.state_dict)
    seen = theirs.train_frames_by_file()
    if not seen:
        return spec
    merged = spec.train_frames_by_file()
    for name, (first, last) in seen.items():
        mine = merged.get(name)
        merged[name] = [first, last] if mine is None else [min(first, mine[0]), max(last, mine[1])]
    extra = dict(spec.extra)
    extra[keys.TRAIN_FRAMES] = merged
    return DataSpec.from_dict({**spec.as_dict(), "extra": extra})


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The epoch records of a ``metrics.jsonl`` up to its first unreadable line, and how many
    lines from there on were not read (0 for a whole log)."""
    lines = path.read_bytes().splitlines()
    records: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("epoch"), int)):
            return records, sum(1 for rest in lines[index:] if rest.strip())
        records.append(record)
    return records, 0


def batches(
    pairs: Sequence[FramePair],
    batch_size: int,
    cutoff: Optional[float],
    drop_rate: float,
    dtype: torch.dtype,
    order: Optional[Sequence[int]] = None,
) -> Iterator[GraphBatch]:
    """Collated GraphBatches over ``pairs`` (in ``order`` if given)."""
    order = range(len(pairs)) if order is None else order
    order = list(order)
    for start in range(0, len(order), batch_size):
        chunk = [pairs[i] for i in order[start : start + batch_size]]
        yield collate(chunk, cutoff=cutoff, drop_rate=drop_rate, dtype=dtype)


@contextmanager
def seeded_noise(model: JumpModel, seed: int, device: str) -> Iterator[None]:
    """For a sampled jump (``noise_channels`` > 0), torch's global generators are seeded with
    ``seed`` inside the block and restored after it: the noise a validation draws is the same
    every epoch, and the training's own draws continue as if no validation had run. A
    deterministic model draws nothing, and the block does nothing."""
    if not getattr(model, "noise_channels", 0):
        yield
        return
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def evaluate_energy_score(model: JumpModel, graphs: Iterable[GraphBatch], device: str = "cpu") -> float:
    """`energy_score` of two samples of a sampled jump per example, pooled over every moving node
    of ``graphs`` (e.g. `batches` of the validation pairs) as `evaluate_mse` pools its squares
    (length unit; lower is better). The samples come from torch's global generator: seed it
    (`seeded_noise`) for a reproducible figure."""
    model.eval()
    total, count = 0.0, 0
    for batch in graphs:
        batch = batch.to(device)
        sample, other = model(batch).positions, model(batch).positions
        nodes = batch.num_nodes if batch.moving is None else int(batch.moving.sum())
        total += float(energy_score(sample, other, batch.target_positions, batch.moving)) * nodes
        count += nodes
    return total / max(count, 1)


@torch.no_grad()
def evaluate_mse(
    model: JumpModel,
    pairs: Sequence[FramePair],
    cutoff: Optional[float],
    drop_rate: float,
    batch_size: int = 50,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> float:
    """Position MSE over all nodes and coordinates of ``pairs`` (the paper's test metric).

    Pairs with a ``moving`` mask are scored on their moving nodes only (walls and other
    kinematic particles are inputs, not predictions): the mean is over every moving node of
    every pair, as `position_mse` pools a batch.
    """
    model.eval()
    total, count = 0.0, 0
    for batch in batches(pairs, batch_size, cutoff, drop_rate, dtype):
        batch = batch.to(device)
        out = model(batch)
        squared = (out.positions - batch.target_positions) ** 2
        if batch.moving is not None:
            squared = squared[batch.moving]
        total += float(squared.sum())
        count += squared.numel()
    return total / max(count, 1)


def time_inference(
    model: JumpModel,
    pairs: Sequence[FramePair],
    cutoff: Optional[float],
    drop_rate: float,
    batch_size: int = 50,
    dtype: torch.dtype = torch.float32,
    repeats: int = 3,
    device: str = "cpu",
    precision: str = "full",
) -> float:
    """Median over ``repeats`` of the forward time (s) to traverse ``pairs``.

    Graph building and host-to-device copies are excluded; on CUDA the clock stops only after
    the device has finished. ``precision``: `fastegnn_md.models.precision`.
    """
    model.eval()
    on_cuda = torch.device(device).type == "cuda"
    collated = [b.to(device) for b in batches(pairs, batch_size, cutoff, drop_rate, dtype)]
    totals = []
    with torch.inference_mode(), precision_context(precision, device, dtype):
        for _ in range(repeats):
            total = 0.0
            for batch in collated:
                start = time.perf_counter()
                model(batch)
                if on_cuda:
                    torch.cuda.synchronize()
                total += time.perf_counter() - start
            totals.append(total)
    return float(np.median(totals))


class TrainingDiverged(FastEGNNError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    epoch: int = 0  # epochs finished
    best_valid_mse: float = math.inf
    #: lowest validation energy score so far (runs trained by the energy score choose best.pt by it)
    best_valid_score: float = math.inf
    best_epoch: int = -1
    epochs_since_best: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class WeightAverage:
    """An exponential moving average of a model's floating-point parameters and buffers.

    After optimizer step t: ``avg ← avg + (1 − d_t)(w − avg)`` with ``d_t = min(decay, (1 + t)/(10 + t))``
    (the warm-up NequIP and timm use, so the first steps are not dominated by the start).
    `swapped_in` puts the average into the model for validation and saving, then restores the
    raw weights the optimizer continues from.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.steps = 0
        self.average = {name: t.detach().clone() for name, t in model.state_dict().items() if t.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        current = model.state_dict()
        for name in self.average:
            self.average[name].lerp_(current[name].detach(), 1.0 - decay)
        self.steps += 1

    @contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """Within the block the model holds the average; yields the raw weights (copies)."""
        raw = {name: t.detach().clone() for name, t in model.state_dict().items()}
        with torch.no_grad():
            state = model.state_dict()
            for name in self.average:
                state[name].copy_(self.average[name])
        try:
            yield raw
        finally:
            model.load_state_dict(raw)

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps, "average": {k: v.clone() for k, v in self.average.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        for name in self.average:
            self.average[name].copy_(state["average"][name])


class Trainer:
    """Trains one model on FramePairs; see the module docstring for what it writes."""

    def __init__(
        self,
        config: TrainConfig,
        train_pairs: Sequence[FramePair],
        valid_pairs: Sequence[FramePair],
        out_dir: str | Path,
        spec_fields: dict[str, Any],
        dataset_name: str = "",
        progress: bool = True,
    ) -> None:
        if not train_pairs or not valid_pairs:
            raise FastEGNNError("training needs at least one training and one validation example")
        self.config = config
        self.train_pairs, self.valid_pairs = train_pairs, valid_pairs
        self.out_dir = Path(out_dir)
        self.dtype = DTYPES[config.dtype]
        self.progress = progress
        self.dataset_name = dataset_name
        num_attrs = train_pairs[0].node_attrs.shape[1]
        fields = dict(spec_fields)
        fields.update(
            cutoff=config.cutoff, drop_rate=config.drop_rate, num_node_attrs=num_attrs, gravity_axis=config.gravity_axis
        )
        self.spec = DataSpec.from_dict(fields)
        self.model, self.hparams = make_model(config, num_attrs, dt=self.spec.dt)
        if config.init is not None:
            self.spec = init_weights(self.model, config.model, self.hparams, self.spec, config.init)
        self.model.to(device=config.device, dtype=self.dtype)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.weight_average = WeightAverage(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.shuffle_rng = torch.Generator().manual_seed(config.seed)
        self.mmd_rng = torch.Generator(device=config.device).manual_seed(config.seed + 1)
        self.state = TrainState()
        self.uses_mmd = config.mmd_weight > 0
        self.scored = config.position_loss == "energy-score"  # best.pt by validation energy score
        self.box_bounds = self._box_bounds(dataset_name) if config.box_weight > 0 else None
        try:
            self.rollout_training = RolloutTraining(train_pairs, config.input_noise, config.unroll, config.seed + 2,
                                                    self.spec.velocity_convention, config.noise_correction)
        except ValueError as exc:
            raise FastEGNNError(f"{dataset_name or 'training data'}: {exc}") from None

    # ----------------------------------------------------------------- persistence
    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset_name,
            "train_examples": len(self.train_pairs),
            "valid_examples": len(self.valid_pairs),
            "epochs": self.state.epoch,
            "best_epoch": self.state.best_epoch,
            "best_valid_mse": self.state.best_valid_mse,
            **({"best_valid_energy_score": self.state.best_valid_score} if self.scored else {}),
            "config": asdict(self.config),
        }

    def _resume_state(self, raw_weights: Optional[dict[str, torch.Tensor]] = None) -> dict[str, Any]:
        """What `_try_resume` needs beyond the saved weights. With a weight average the saved
        weights are the average, so the optimizer's own (``raw_weights``) and the average's
        state ride along."""
        extra: dict[str, Any] = {}
        if self.weight_average is not None:
            extra = {"raw_weights": raw_weights, "weight_average": self.weight_average.state()}
        return {
            **extra,
            "optimizer": self.optimizer.state_dict(),
            "shuffle_rng": self.shuffle_rng.get_state(),
            "mmd_rng": self.mmd_rng.get_state(),
            "rollout_rng": self.rollout_training.state(),
            # A sampled jump draws its noise from torch's global generator (`draw_noise`): the
            # CPU's, or the device's on CUDA.
            **({"torch_rng": self._noise_rng_state()} if self.config.noise_channels > 0 else {}),
            "epoch": self.state.epoch,
            "best_valid_mse": self.state.best_valid_mse,
            "best_valid_score": self.state.best_valid_score,
            "best_epoch": self.state.best_epoch,
            "epochs_since_best": self.state.epochs_since_best,
            "config": asdict(self.config),
        }

    def _noise_rng_state(self) -> torch.Tensor:
        device = torch.device(self.config.device)
        return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()

    def _set_noise_rng_state(self, state: torch.Tensor) -> None:
        device = torch.device(self.config.device)
        if device.type == "cuda":
            torch.cuda.set_rng_state(state, device)
        else:
            torch.set_rng_state(state)

    def _inference_weights(self) -> Any:
        """Context in which the model holds the weights validated and saved: the average
        (`WeightAverage.swapped_in`, yielding the raw weights) if kept, else its own (yields None)."""
        return self.weight_average.swapped_in(self.model) if self.weight_average is not None else nullcontext()

    def _save(self, name: str, with_resume: bool) -> None:
        """Write ``name`` with the weights inference should use (the average, if kept)."""
        with self._inference_weights() as raw:
            save_checkpoint(
                self.out_dir / name,
                self.config.model,
                self.hparams,
                self.model,
                self.spec,
                training=self.summary(),
                resume=self._resume_state(raw) if with_resume else None,
            )

    def _try_resume(self) -> bool:
        last = self.out_dir / LAST
        if not last.exists():
            return False
        ckpt = load_checkpoint(last)
        if ckpt.resume is None:
            return False
        saved, current = ckpt.resume["config"], asdict(self.config)
        # A longer or more patient run continues the same trajectory; anything else would not.
        changed = sorted(k for k in saved if k not in EXTENDABLE and saved.get(k) != current.get(k))
        if changed:
            raise FastEGNNError(
                f"{last}: run was started with different settings ({', '.join(changed)}); "
                "use another --out directory or the same settings"
            )
        if self.weight_average is not None:  # saved: the average; the optimizer's weights ride in resume
            self.weight_average.set_state(ckpt.resume["weight_average"])
            self.model.load_state_dict(ckpt.resume["raw_weights"])
        else:
            self.model.load_state_dict(ckpt.state_dict)
        self.optimizer.load_state_dict(ckpt.resume["optimizer"])
        self.shuffle_rng.set_state(ckpt.resume["shuffle_rng"])
        self.mmd_rng.set_state(ckpt.resume["mmd_rng"])
        if "rollout_rng" in ckpt.resume:
            self.rollout_training.set_state(ckpt.resume["rollout_rng"])
        if "torch_rng" in ckpt.resume:
            self._set_noise_rng_state(ckpt.resume["torch_rng"])
        self.state = TrainState(
            epoch=int(ckpt.resume["epoch"]),
            best_valid_mse=float(ckpt.resume["best_valid_mse"]),
            best_valid_score=float(ckpt.resume.get("best_valid_score", math.inf)),
            best_epoch=int(ckpt.resume["best_epoch"]),
            epochs_since_best=int(ckpt.resume["epochs_since_best"]),
        )
        self._truncate_metrics(self.state.epoch)
        return True

    def _truncate_metrics(self, epochs_done: int) -> None:
        """Keep the log lines of the checkpointed epochs only (the others will be run again).

        The log is read line by line as bytes and ends at the first line that is not a complete
        JSON record of an epoch (a line cut short by a kill, or garbage): what follows it cannot
        be trusted, and the epochs it would describe are rerun from the checkpoint anyway. What
        was dropped is said in one warning.
        """
        path = self.out_dir / METRICS
        if not path.exists():
            return
        records, unreadable = read_metrics(path)
        kept = [record for record in records if record["epoch"] <= epochs_done]
        if unreadable:
            warnings.warn(
                f"{path}: {unreadable} unreadable line(s) dropped (cut short or not JSON); "
                f"the log keeps the {len(kept)} checkpointed epoch(s) it could read",
                FastEGNNWarning, stacklevel=2,
            )
        self.state.history = kept
        text = "".join(json.dumps(record) + "\n" for record in kept)
        write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))

    def _log(self, record: dict[str, Any]) -> None:
        self.state.history.append(record)
        with open(self.out_dir / METRICS, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    # ----------------------------------------------------------------- training
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        config = self.config
        self.model.train()
        order = torch.randperm(len(self.train_pairs), generator=self.shuffle_rng).tolist()
        num_batches = math.ceil(len(order) / config.batch_size)
        sums = {"loss": 0.0, "mse": 0.0, "mmd": 0.0, "local": 0.0, "radial": 0.0, "gyration": 0.0, "box": 0.0,
                "energy": 0.0, "density": 0.0, "score": 0.0}
        bar = tqdm(
            self._training_batches(order),
            total=num_batches,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            leave=False,
            disable=not self.progress,
        )
        for batch in bar:
            batch = batch.to(config.device)
            with precision_context(config.precision, config.device, self.dtype):
                out = self.model(batch)
            mse = position_mse(out.positions, batch.target_positions, batch.moving)
            loss = mse
            other = None
            if config.position_loss == "energy-score":
                with precision_context(config.precision, config.device, self.dtype):
                    other = self.model(batch).positions  # a second, independent sample
                score = energy_score(out.positions, other, batch.target_positions, batch.moving)
                loss = score
            else:
                score = torch.zeros((), dtype=mse.dtype)
            mmd = torch.zeros((), dtype=mse.dtype)
            if self.uses_mmd and out.virtual_positions is not None:
                # Eq. 11's X_GT: the targets of the predicted (moving) nodes only.
                real, sizes = moving_subset(batch.target_positions, batch.batch, batch.num_graphs, batch.moving)
                mmd = mmd_loss(
                    real,
                    out.virtual_positions,
                    sizes,
                    config.sigma,
                    config.mmd_samples,
                    generator=self.mmd_rng,
                )
                loss = loss + config.mmd_weight * mmd
            local = torch.zeros((), dtype=mse.dtype)
            if config.local_distance_weight > 0:
                local = local_distance_loss(out.positions, batch.target_positions, self._local_pairs(batch), other)
                loss = loss + config.local_distance_weight * local
            radial = torch.zeros((), dtype=mse.dtype)
            if config.radial_distance_weight > 0:
                radial = radial_distance_loss(out.positions, batch.target_positions, batch.batch,
                                              batch.num_graphs, batch.moving)
                loss = loss + config.radial_distance_weight * radial
            gyration = torch.zeros((), dtype=mse.dtype)
            if config.gyration_weight > 0:
                gyration = gyration_loss(out.positions, batch.target_positions, batch.batch, batch.num_graphs,
                                         batch.moving)
                loss = loss + config.gyration_weight * gyration
            box = torch.zeros((), dtype=mse.dtype)
            if config.box_weight > 0:
                box = box_loss(out.positions, self.box_bounds, batch.moving)
                loss = loss + config.box_weight * box
            energy = torch.zeros((), dtype=mse.dtype)
            if config.energy_weight > 0:
                energy = kinetic_energy_loss(out.positions, batch.target_positions, batch.positions, batch.batch,
                                             batch.num_graphs, batch.moving)
                loss = loss + config.energy_weight * energy
            density = torch.zeros((), dtype=mse.dtype)
            if config.density_weight > 0:
                density = self._density_loss(batch, out.positions)
                loss = loss + config.density_weight * density
            if not torch.isfinite(loss):
                # Stop before the weights are poisoned; last.pt still holds the last good epoch.
                raise TrainingDiverged(
                    f"{self.out_dir}: training loss became {float(loss)} in epoch {epoch + 1}; "
                    "lower --lr or check the data (last.pt keeps the last finished epoch)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            if self.weight_average is not None:
                self.weight_average.update(self.model)
            sums["loss"] += loss.item()
            sums["mse"] += mse.item()
            sums["mmd"] += mmd.item()
            sums["local"] += local.item()
            sums["radial"] += radial.item()
            sums["gyration"] += gyration.item()
            sums["box"] += box.item()
            sums["energy"] += energy.item()
            sums["density"] += density.item()
            sums["score"] += score.item()
            bar.set_postfix(mse=f"{mse.item():.4g}")
        return {k: v / num_batches for k, v in sums.items()}

    def _box_bounds(self, dataset_name: str) -> torch.Tensor:
        """The data's box (3, 2), in the run's dtype and on its device, for the box term; a one-line
        error when the data has none."""
        bounds = self.spec.extra.get(keys.BOUNDS)
        where = dataset_name or "training data"
        if bounds is None:
            raise FastEGNNError(f"{where}: box_weight needs data with a box (SPH metadata 'bounds'); this data has none")
        try:
            box = box_array(bounds)
        except ValueError as exc:
            raise FastEGNNError(f"{where}: {exc}") from None
        margin = self.config.box_margin
        try:
            box = shrunk_box(box, margin)
        except ValueError as exc:
            raise FastEGNNError(f"{where}: box_margin {margin} {exc}") from None
        return torch.as_tensor(box, dtype=self.dtype, device=self.config.device)

    def _local_pairs(self, batch: GraphBatch) -> torch.Tensor:
        """The close pairs of the batch's input frames (`local_pairs`) for the local-distance term."""
        moving = None if batch.moving is None else batch.moving.cpu().numpy()
        pairs = local_pairs(batch.positions.detach().cpu().numpy(), batch.graph_sizes.tolist(),
                            self.config.local_distance_cutoff, moving)
        return torch.as_tensor(pairs, device=batch.positions.device)

    def _density_loss(self, batch: GraphBatch, predicted: torch.Tensor) -> torch.Tensor:
        """`frame_density_loss` of the batch's predicted frame against its targets."""
        config = self.config
        radius = config.density_radius if config.density_radius is not None else config.cutoff
        return frame_density_loss(predicted, batch.target_positions, batch.graph_sizes.tolist(), radius,
                                  batch.moving)

    def _training_batches(self, order: list[int]) -> Iterator[GraphBatch]:
        """Batches of the training pairs in ``order``: as they are, or noised and unrolled."""
        config, shaping = self.config, self.rollout_training
        if not shaping.active:
            yield from batches(self.train_pairs, config.batch_size, config.cutoff, config.drop_rate, self.dtype, order)
            return
        for start in range(0, len(order), config.batch_size):
            chunk = [self.train_pairs[i] for i in order[start : start + config.batch_size]]
            examples = shaping.examples(chunk, self.model, config.cutoff, config.drop_rate, self.dtype, config.device)
            yield collate(examples, cutoff=config.cutoff, drop_rate=config.drop_rate, dtype=self.dtype)

    def fit(self, resume: bool = True) -> dict[str, Any]:
        """Train until ``epochs`` or early stopping; returns the training summary."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            if not self._try_resume():
                # No checkpoint to resume from (e.g. killed after logging its first epoch but
                # before last.pt was written): the log's epochs will all be run again.
                self._truncate_metrics(0)
        elif (self.out_dir / METRICS).exists():
            (self.out_dir / METRICS).unlink()
        config = self.config
        epochs = tqdm(
            range(self.state.epoch, config.epochs),
            initial=self.state.epoch,
            total=config.epochs,
            desc="training",
            disable=not self.progress,
        )
        for epoch in epochs:
            if self.state.epochs_since_best >= config.patience:
                break
            start = time.perf_counter()
            train = self._train_epoch(epoch)
            batching = (config.batch_size, config.cutoff, config.drop_rate, self.dtype)
            with self._inference_weights():  # the weights that will be saved are the ones validated
                with seeded_noise(self.model, config.seed, config.device):
                    valid_mse = evaluate_mse(self.model, self.valid_pairs, config.cutoff, config.drop_rate,
                                             config.batch_size, self.dtype, config.device)
                valid_score = math.nan
                if self.scored:
                    with seeded_noise(self.model, config.seed, config.device):
                        valid_score = evaluate_energy_score(self.model, batches(self.valid_pairs, *batching),
                                                            config.device)
            if self.scored:
                improved = valid_score < self.state.best_valid_score
            else:
                improved = valid_mse < self.state.best_valid_mse
            self.state.epoch = epoch + 1
            if improved:
                self.state.best_valid_mse, self.state.best_epoch = valid_mse, epoch + 1
                if self.scored:
                    self.state.best_valid_score = valid_score
                self.state.epochs_since_best = 0
            else:
                self.state.epochs_since_best += 1
            self._log(
                {
                    "epoch": epoch + 1,
                    "train_loss": train["loss"],
                    "train_mse": train["mse"],
                    "train_mmd": train["mmd"],
                    **({"train_local_distance": train["local"]} if self.config.local_distance_weight > 0 else {}),
                    **({"train_radial_distance": train["radial"]} if self.config.radial_distance_weight > 0 else {}),
                    **({"train_gyration": train["gyration"]} if self.config.gyration_weight > 0 else {}),
                    **({"train_box": train["box"]} if self.config.box_weight > 0 else {}),
                    **({"train_energy_score": train["score"]} if self.config.position_loss == "energy-score" else {}),
                    **({"train_energy": train["energy"]} if self.config.energy_weight > 0 else {}),
                    **({"train_density": train["density"]} if self.config.density_weight > 0 else {}),
                    "valid_mse": valid_mse,
                    **({"valid_energy_score": valid_score} if self.scored else {}),
                    "best_valid_mse": self.state.best_valid_mse,
                    "seconds": time.perf_counter() - start,
                }
            )
            if improved:
                self._save(BEST, with_resume=False)
            self._save(LAST, with_resume=True)
            epochs.set_postfix(valid_mse=f"{valid_mse:.4g}", best=f"{self.state.best_valid_mse:.4g}")
        return self.summary()
