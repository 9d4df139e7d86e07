"""The charged N-body system (Kipf et al. 2018, NRI; Satorras et al. 2021, EGNN) at FastEGNN size.

Physics (everything is dimensionless: unit mass, unit charge magnitude, interaction strength 1,
so lengths, times, velocities and forces carry no units):

* ``N`` particles (100 in the FastEGNN paper), charges ``q_i`` drawn from {-1, +1} with
  probability 1/2 each.
* Coulomb-like force ``F_i = sum_{j != i} q_i q_j (x_i - x_j) / |x_i - x_j|^3`` (like charges
  repel), each component clipped to ``[-0.1/dt, 0.1/dt]`` as in the NRI simulator.
* Initial positions ~ Normal(0, loc_std^2) per coordinate with
  ``loc_std = (N / 5)^(1/3)``: the NRI/EGNN system has 5 particles and ``loc_std = 1``; scaling
  the spread with the cube root of ``N`` keeps the particle density of that system.
* Initial velocities: uniformly random direction, norm 0.5. No box, no wall reflections.
* NRI leapfrog: ``v += dt F(x)`` once, then per step ``x += dt v`` (frames are recorded here,
  every ``sample_every`` steps, plus frame 0 = the initial state) and ``v += dt F(x)``. A recorded
  velocity (frames > 0) is therefore the one that moved the particles into the recorded
  positions, half a step behind them. The first kick is a full ``dt`` (a textbook leapfrog would
  use ``dt/2``), so the conserved energy differs from that of the initial state by O(dt).

The simulation runs in float64 with torch, many systems at once. The force kernel computes the
pair differences directly (the ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j`` expansion loses digits on close
pairs) and is compiled with ``torch.compile`` when a C++ compiler is available (about 10x faster
than eager torch on CPU); otherwise an eager kernel is used. Initial conditions of system ``k`` of
split ``s`` come from ``np.random.default_rng([seed, s, k])``, so a system does not depend on the
chunk size or on how many systems are generated. Results are bitwise reproducible for a given
kernel (compiled or eager) and machine; the two kernels agree to ~1e-12 per step, but the
dynamics is chaotic, so long trajectories of the two may drift apart.

On-disk format (``generate_dataset`` / ``load_nbody``): a directory with ``train.npz``,
``valid.npz``, ``test.npz`` (arrays ``positions``/``velocities`` float32 (S, T, N, 3),
``charges`` float32 (S, N)) and ``metadata.json``.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from tqdm import tqdm

from ..conventions import SPLITS
from ..errors import DataError, FastEGNNWarning
from ..graph import FramePair
from ..io import write_atomically
from ..spec_keys import NBODY_FORMAT as FORMAT

FORMAT_VERSION = 1
ARRAY_KEYS = ("positions", "velocities", "charges")
REQUIRED_METADATA = ("format", "format_version", "num_particles", "num_frames", "frame_dt", "splits")

# Eager torch does ~2e8 pair-steps/s here; compiling costs ~10 s, so below this it is not worth it.
COMPILE_WORTH_PAIR_STEPS = 2e9
REFERENCE_NUM_PARTICLES = 5  # the NRI/EGNN system, whose positions have std 1
INITIAL_SPEED = 0.5
FORCE_CLIP_TIMES_DT = 0.1  # NRI clips force components at 0.1 / dt
# Floor on squared distances: keeps exactly coincident particles finite (w * 0 = 0, not nan).
_MIN_R2 = 1e-100

ForceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
PathLike = Union[str, Path]


# --------------------------------------------------------------------------- initial state


def initial_loc_std(num_particles: int) -> float:
    """Std of the initial positions: ``(N / 5)^(1/3)``, the 5-particle system's density."""
    return (num_particles / REFERENCE_NUM_PARTICLES) ** (1.0 / 3.0)


def initial_conditions(
    num_systems: int,
    num_particles: int,
    seed: int = 0,
    split_index: int = 0,
    first_system: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random initial states of systems ``first_system .. first_system + num_systems - 1``.

    Returns
    -------
    positions : (S, N, 3) float64, dimensionless.
    velocities : (S, N, 3) float64, every row of norm 0.5.
    charges : (S, N) float64 in {-1, +1}.
    """
    loc_std = initial_loc_std(num_particles)
    positions = np.empty((num_systems, num_particles, 3))
    velocities = np.empty((num_systems, num_particles, 3))
    charges = np.empty((num_systems, num_particles))
    for k in range(num_systems):
        rng = np.random.default_rng([seed, split_index, first_system + k])
        charges[k] = 2.0 * rng.integers(0, 2, size=num_particles) - 1.0
        positions[k] = rng.normal(0.0, loc_std, size=(num_particles, 3))
        direction = rng.normal(size=(num_particles, 3))
        velocities[k] = INITIAL_SPEED * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    return positions, velocities, charges


# --------------------------------------------------------------------------- forces


def _forces_fused(pos: torch.Tensor, charges: torch.Tensor, diag_pad: torch.Tensor, max_force: float) -> torch.Tensor:
    """Clipped forces, written so that inductor fuses everything into one loop over pairs.

    ``pos`` is (S, 3, N), ``charges`` (S, N), ``diag_pad`` (N, N) with +inf on the diagonal: it
    zeroes the self term and measured ~3x faster than an ``i == j`` mask in the fused loop.
    Returns (S, 3, N).
    """
    x, y, z = pos.unbind(1)
    dx = x[:, :, None] - x[:, None, :]
    dy = y[:, :, None] - y[:, None, :]
    dz = z[:, :, None] - z[:, None, :]
    r2 = (dx * dx + dy * dy + dz * dz).clamp_min(_MIN_R2) + diag_pad
    w = r2.rsqrt() ** 3 * charges[:, None, :]  # q_j / r_ij^3, 0 for j == i
    total = torch.stack([(w * dx).sum(-1), (w * dy).sum(-1), (w * dz).sum(-1)], dim=1)
    return (charges[:, None, :] * total).clamp(-max_force, max_force)


def _forces_eager(pos: torch.Tensor, charges: torch.Tensor, diag_pad: torch.Tensor, max_force: float) -> torch.Tensor:
    """Same forces as `_forces_fused`, arranged for eager torch: one reused (S, N, N) buffer
    and a batched matmul, ``sum_j w_ij (x_i - x_j) = x_i sum_j w_ij - sum_j w_ij x_j``.
    The matmul form costs ~1e-12 relative accuracy; distances are still exact differences."""
    num_systems, _, n = pos.shape
    r2 = pos.new_zeros(num_systems, n, n)
    for coord in pos.unbind(1):
        diff = coord[:, :, None] - coord[:, None, :]
        r2.addcmul_(diff, diff)
    w = r2.clamp_min_(_MIN_R2).add_(diag_pad).rsqrt_().pow_(3).mul_(charges[:, None, :])
    total = pos * w.sum(-1)[:, None, :] - torch.bmm(pos, w.transpose(1, 2))
    return (charges[:, None, :] * total).clamp_(-max_force, max_force)


@functools.lru_cache(maxsize=None)
def _compiled_forces() -> ForceFn:
    # One compiled object per process so its kernels are reused across calls.
    return torch.compile(_forces_fused)


class _ForceKernel:
    """Compiled kernel if possible; with ``use_compile=None`` fall back to eager on failure."""

    def __init__(self, use_compile: Optional[bool]) -> None:
        self._strict = use_compile is True
        self._fn: ForceFn = _compiled_forces() if use_compile is not False else _forces_eager
        self._verified = use_compile is False

    def __call__(self, pos: torch.Tensor, charges: torch.Tensor, diag_pad: torch.Tensor, max_force: float) -> torch.Tensor:
        if self._verified:
            return self._fn(pos, charges, diag_pad, max_force)
        try:
            out = self._fn(pos, charges, diag_pad, max_force)
        except Exception as exc:  # compilation needs a C++ toolchain; any failure means "not here"
            if self._strict:
                raise
            warnings.warn(f"torch.compile unavailable ({type(exc).__name__}); N-body simulation runs eagerly (slower)",
                          FastEGNNWarning)
            self._fn = _forces_eager
            out = self._fn(pos, charges, diag_pad, max_force)
        self._verified = True
        return out


# --------------------------------------------------------------------------- integration


def _integrate(
    positions: np.ndarray,
    velocities: np.ndarray,
    charges: np.ndarray,
    num_frames: int,
    sample_every: int,
    dt: float,
    forces: ForceFn,
    on_steps: Callable[[int], None] = lambda steps: None,
) -> tuple[np.ndarray, np.ndarray]:
    """NRI leapfrog for a chunk of systems in float64.

    ``positions``/``velocities`` (S, N, 3), ``charges`` (S, N). Returns positions and velocities
    (S, T, N, 3) float64 at frames ``0..T-1`` (``sample_every`` steps apart). ``on_steps(k)`` is
    called after every ``k`` integrator steps (progress reporting).
    """
    num_systems, n, _ = positions.shape
    # (S, 3, N) layout: the pair kernels vectorise over the contiguous particle axis.
    x = torch.tensor(positions, dtype=torch.float64).transpose(1, 2).contiguous()
    v = torch.tensor(velocities, dtype=torch.float64).transpose(1, 2).contiguous()
    q = torch.tensor(charges, dtype=torch.float64)
    diag_pad = torch.diag(torch.full((n,), math.inf, dtype=torch.float64))
    max_force = FORCE_CLIP_TIMES_DT / dt

    out_x = np.empty((num_systems, num_frames, n, 3))
    out_v = np.empty((num_systems, num_frames, n, 3))

    def record(frame: int) -> None:
        out_x[:, frame] = x.transpose(1, 2).numpy()
        out_v[:, frame] = v.transpose(1, 2).numpy()

    record(0)
    total_steps = (num_frames - 1) * sample_every
    if total_steps == 0:
        return out_x, out_v
    v.add_(forces(x, q, diag_pad, max_force), alpha=dt)
    for step in range(1, total_steps + 1):
        x.add_(v, alpha=dt)
        if step % sample_every == 0:
            record(step // sample_every)
            on_steps(sample_every)
            if step == total_steps:
                break  # the last kick would never be recorded
        v.add_(forces(x, q, diag_pad, max_force), alpha=dt)
    return out_x, out_v


def _check_simulation_args(**args: float) -> None:
    minimum = {"num_systems": 0, "num_particles": 1, "num_frames": 1, "sample_every": 1, "chunk_size": 1}
    for name, low in minimum.items():
        if args[name] < low:
            raise ValueError(f"{name} must be >= {low}, got {args[name]}")
    if not args["dt"] > 0:
        raise ValueError(f"dt must be positive, got {args['dt']}")


def simulate_charged_nbody(
    num_systems: int,
    num_particles: int = 100,
    num_frames: int = 41,
    sample_every: int = 100,
    dt: float = 0.001,
    seed: int = 0,
    split_index: int = 0,
    chunk_size: int = 500,
    progress: bool = True,
    use_compile: Optional[bool] = None,
) -> dict[str, np.ndarray]:
    """Simulate independent charged N-body systems (dimensionless units).

    Parameters
    ----------
    num_systems : S, number of independent systems.
    num_particles : N, particles per system.
    num_frames : T, stored frames including the initial state (frame 0).
    sample_every : integrator steps between stored frames; frames are ``dt * sample_every``
        time units apart.
    dt : integrator time step (dimensionless).
    seed, split_index : system ``k`` starts from ``np.random.default_rng([seed, split_index, k])``.
    chunk_size : systems simulated together; affects speed and memory only, not the result.
    progress : show a tqdm progress bar.
    use_compile : ``True`` requires ``torch.compile``, ``False`` runs eager torch, ``None`` compiles
        only workloads big enough to repay the ~10 s compilation (falling back to eager with a
        warning if compiling fails).

    Returns
    -------
    dict with ``positions`` float32 (S, T, N, 3), ``velocities`` float32 (S, T, N, 3) and
    ``charges`` float32 (S, N) in {-1, +1}.
    """
    _check_simulation_args(
        num_systems=num_systems, num_particles=num_particles, num_frames=num_frames,
        sample_every=sample_every, chunk_size=chunk_size, dt=dt,
    )
    positions = np.empty((num_systems, num_frames, num_particles, 3), dtype=np.float32)
    velocities = np.empty_like(positions)
    charges = np.empty((num_systems, num_particles), dtype=np.float32)
    pair_steps = num_systems * num_particles**2 * (num_frames - 1) * sample_every
    if use_compile is None and pair_steps < COMPILE_WORTH_PAIR_STEPS:
        use_compile = False
    forces = _ForceKernel(use_compile)
    starts = range(0, num_systems, chunk_size)
    steps_per_chunk = (num_frames - 1) * sample_every
    with tqdm(total=len(starts) * steps_per_chunk, desc=f"N-body split {split_index}", unit="step",
              disable=not progress) as bar:
        for start in starts:
            count = min(chunk_size, num_systems - start)
            x0, v0, q = initial_conditions(count, num_particles, seed, split_index, first_system=start)
            xs, vs = _integrate(x0, v0, q, num_frames, sample_every, dt, forces, bar.update)
            positions[start:start + count] = xs
            velocities[start:start + count] = vs
            charges[start:start + count] = q
    return {"positions": positions, "velocities": velocities, "charges": charges}


# --------------------------------------------------------------------------- files


def generate_dataset(
    out_dir: PathLike,
    num_train: int = 5000,
    num_valid: int = 2000,
    num_test: int = 2000,
    num_particles: int = 100,
    num_frames: int = 41,
    seed: int = 0,
    progress: bool = True,
    sample_every: int = 100,
    dt: float = 0.001,
    chunk_size: int = 500,
    use_compile: Optional[bool] = None,
) -> Path:
    """Simulate the train/valid/test splits and write them to ``out_dir``.

    Writes ``{train,valid,test}.npz`` (``np.savez``: positions/velocities float32 (S, T, N, 3),
    charges float32 (S, N)) and, last, ``metadata.json``; every file is written atomically.
    Split ``i`` of ``SPLITS`` uses ``split_index=i``. Other arguments as in
    `simulate_charged_nbody`. Returns the directory.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Metadata marks a complete dataset: drop a stale one before rewriting the splits.
    (out_dir / "metadata.json").unlink(missing_ok=True)
    sizes = dict(zip(SPLITS, (num_train, num_valid, num_test)))
    for split_index, (split, count) in enumerate(sizes.items()):
        arrays = simulate_charged_nbody(
            count, num_particles, num_frames, sample_every, dt, seed, split_index,
            chunk_size=chunk_size, progress=progress, use_compile=use_compile,
        )
        write_atomically(out_dir / f"{split}.npz", functools.partial(np.savez, **arrays))
    metadata = _metadata(num_particles, num_frames, sample_every, dt, seed, sizes)
    text = json.dumps(metadata, indent=2) + "\n"
    write_atomically(out_dir / "metadata.json", lambda handle: handle.write(text.encode("utf-8")))
    return out_dir


def _metadata(num_particles: int, num_frames: int, sample_every: int, dt: float, seed: int,
              sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "num_particles": num_particles,
        "num_frames": num_frames,
        "dt": dt,
        "sample_every": sample_every,
        "frame_dt": dt * sample_every,
        "seed": seed,
        "splits": sizes,
        "units": "dimensionless",
        "initial_loc_std": initial_loc_std(num_particles),
        "initial_speed": INITIAL_SPEED,
        "force_clip": FORCE_CLIP_TIMES_DT / dt,
        "description": (
            "Charged N-body system (NRI/EGNN ChargedParticlesSim, no box): unit masses, charges "
            "+-1, F_i = sum_j q_i q_j (x_i - x_j)/|x_i - x_j|^3 clipped per component, NRI "
            "leapfrog; frame 0 is the initial state, frames are frame_dt apart; velocities of "
            "frames > 0 are the leapfrog velocities that produced the recorded positions."
        ),
    }


def _read_metadata(root: Path) -> dict[str, Any]:
    if not root.exists():
        raise DataError(f"{root}: no such N-body dataset directory")
    if not root.is_dir():
        raise DataError(f"{root}: expected an N-body dataset directory, got a file")
    meta_file = root / "metadata.json"
    if not meta_file.is_file():
        raise DataError(f"{meta_file}: missing; {root} is not an N-body dataset directory")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_file}: unreadable metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{meta_file}: format is {found!r}, expected {FORMAT!r}")
    missing = [key for key in REQUIRED_METADATA if key not in meta]
    if missing:
        raise DataError(f"{meta_file}: metadata lacks keys {', '.join(missing)}")
    if not isinstance(meta["format_version"], int) or meta["format_version"] > FORMAT_VERSION:
        raise DataError(
            f"{meta_file}: format_version {meta['format_version']!r} is not supported "
            f"(this reader knows up to {FORMAT_VERSION})"
        )
    return meta


def _split_file(root: Path, meta: dict[str, Any], split: str) -> Path:
    splits = meta["splits"]
    if not isinstance(splits, dict) or split not in splits:
        known = ", ".join(splits) if isinstance(splits, dict) else "none"
        raise DataError(f"{root / 'metadata.json'}: no split {split!r} (splits: {known})")
    path = root / f"{split}.npz"
    if not path.is_file():
        raise DataError(f"{path}: split file missing")
    return path


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in ARRAY_KEYS if key not in npz.files]
            if missing:
                raise DataError(f"{path}: not an N-body split file (missing arrays {', '.join(missing)})")
            return {key: npz[key] for key in ARRAY_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, AttributeError) as exc:
        # AttributeError: np.load returned a plain array (an .npy file), which has no `.files`.
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _check_shapes(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    positions, velocities, charges = (arrays[key] for key in ARRAY_KEYS)
    if positions.ndim != 4 or positions.shape[-1] != 3:
        raise DataError(f"{path}: positions must have shape (systems, frames, particles, 3), got {positions.shape}")
    if velocities.shape != positions.shape:
        raise DataError(f"{path}: velocities shape {velocities.shape} differs from positions shape {positions.shape}")
    systems, frames, particles, _ = positions.shape
    if charges.shape != (systems, particles):
        raise DataError(f"{path}: charges shape {charges.shape}, expected ({systems}, {particles}) from positions")
    expected = (meta["num_frames"], meta["num_particles"])
    if (frames, particles) != expected:
        raise DataError(
            f"{path}: arrays hold {frames} frames x {particles} particles but metadata.json says "
            f"{expected[0]} x {expected[1]}"
        )


def _check_frames(path: Path, num_frames: int, frame_in: int, frame_out: int) -> None:
    for name, frame in (("frame_in", frame_in), ("frame_out", frame_out)):
        if not 0 <= frame < num_frames:
            raise DataError(f"{path}: {name}={frame} out of range, the file has {num_frames} frames (0..{num_frames - 1})")
    if frame_out <= frame_in:
        raise DataError(f"{path}: frame_out={frame_out} must come after frame_in={frame_in}")


def load_nbody(
    path: PathLike,
    split: str = "train",
    frame_in: int = 30,
    frame_out: int = 40,
    max_systems: Optional[int] = None,
) -> list[FramePair]:
    """Read one split of a `generate_dataset` directory as FramePairs (dimensionless units).

    Parameters
    ----------
    path : dataset directory (holds ``metadata.json`` and ``<split>.npz``).
    split : ``"train"``, ``"valid"`` or ``"test"``.
    frame_in, frame_out : input and target frame indices, ``0 <= frame_in < frame_out < T``.
    max_systems : keep only the first this many systems (all if ``None``).

    Returns
    -------
    One FramePair per system: ``positions``/``velocities`` (N, 3) at ``frame_in``,
    ``target_positions``/``target_velocities`` (N, 3) at ``frame_out``, ``node_attrs`` the
    charges (N, 1), ``masses`` ones (N,), all float32; ``metadata`` holds ``dt`` (the jump,
    ``(frame_out - frame_in) * frame_dt``), ``source`` (the split file), ``frames`` and
    ``system`` (index in the split).

    Raises
    ------
    DataError : missing directory/metadata/split file, wrong format, inconsistent arrays or
        frame indices out of range.
    """
    root = Path(path)
    meta = _read_metadata(root)
    file = _split_file(root, meta, split)
    arrays = _read_arrays(file)
    _check_shapes(file, arrays, meta)
    systems, num_frames, particles, _ = arrays["positions"].shape
    _check_frames(file, num_frames, frame_in, frame_out)
    if max_systems is not None:
        if max_systems < 0:
            raise DataError(f"{file}: max_systems must be >= 0, got {max_systems}")
        systems = min(systems, max_systems)

    frames = [frame_in, frame_out]
    positions = arrays["positions"][:systems, frames].astype(np.float32, copy=False)
    velocities = arrays["velocities"][:systems, frames].astype(np.float32, copy=False)
    charges = arrays["charges"][:systems].astype(np.float32, copy=False)
    jump = (frame_out - frame_in) * float(meta["frame_dt"])
    masses = np.ones(particles, dtype=np.float32)
    return [
        FramePair(
            positions=positions[k, 0],
            velocities=velocities[k, 0],
            target_positions=positions[k, 1],
            target_velocities=velocities[k, 1],
            node_attrs=charges[k][:, None],
            masses=masses.copy(),
            metadata={"dt": jump, "source": str(file), "frames": (frame_in, frame_out), "system": k},
        )
        for k in range(systems)
    ]
