"""SPlisHSPlasH adapter: reference SPH data, "water falling in a box" (Water-3D style).

Each trajectory is water moving under gravity inside a closed cubic box, simulated with
SPlisHSPlasH's DFSPH solver (Bender & Koschier) through its Python binding ``pysplishsplash``,
headless. Its scene kind (`SCENES`: a block dropped with a random velocity, a dam break, a
block falling into a pool) and the blocks' sizes, positions and initial velocities are drawn per
trajectory from seeded generators (`scene_layout`), so a dataset is reproducible and trajectory
``k`` does not depend on how many others are generated.

Units
-----
SPlisHSPlasH works in SI units: metres, seconds, kg/m³; every `SPHSceneSettings` field says
its unit. The dataset is written in dimensionless coordinates: the box is
``[0, box_size]³`` metres and positions are divided by ``box_size``, so the dataset's domain
is the unit cube ``[0, 1]³`` (``metadata["bounds"]``), as in Water-3D. With the default
``box_size = 1 m`` the numbers are the same as in metres. Time is not rescaled:
``metadata["dt"]`` is the time between stored frames in seconds. Gravity points along −y
(Water-3D's gravity axis).

Solver setup (the scene file written for each trajectory)
---------------------------------------------------------
* DFSPH, fixed time step ``time_step`` (``cflMethod`` 0: no CFL adaptivity), frames stored every
  ``frame_interval / time_step`` solver steps; standard viscosity ``viscosity``, rest density
  1000 kg/m³, precomputed cubic-spline kernel (SPlisHSPlasH's default in 3-D).
* ``enableZSort`` false: SPlisHSPlasH otherwise periodically reorders its particle arrays along
  a z-curve (measured: with it on, the ids of a 125-particle block were permuted within 600
  steps); with it off, row i of every frame is the same particle. The child process checks
  that SPlisHSPlasH's own ``id`` field is still 0..N-1 at the end.
* Walls: the box is a static rigid body handled with Akinci et al. 2012 particle boundaries
  (``boundaryHandlingMethod`` 0, regular triangle sampling of the box surface). Volume maps
  (SPlisHSPlasH's default) took ~22 s to precompute for a 30³ map and density maps ~90 s,
  against ~0 s for the wall particles, with the same cost per step.
* The solver's wall particles are not stored (a 1 m box has ~17.5k at the default radius).
  Instead, since issue 16, the box is stored as a lattice of kinematic wall particles at the
  fluid spacing 2r (`with_box_walls`, `fastegnn_md.adapters.sph.walls`; DeepMind type 3,
  after the water), so a learned model sees the walls it must not cross: 3,752 particles for
  r = 2 cm in a 1 m box, 9,602 at the default 1.25 cm. Why particles and not LagrangeBench's
  distance-to-bounds features, measured in ``benchmarks/sph_walls.py`` (RESULTS.md): the
  features are free but give an equivariant model no direction to push away from a side wall;
  the particles do (the coordinate update runs along x_i − x_j), and with wall–wall edges left
  out of the graph they cost 1.9× the water-only training step, +6 % on disk.
  ``store_walls=False`` stores the water alone, as before.
* No partio/VTK/state export: SPlisHSPlasH writes only its log, into a temporary directory.

Water block: a regular lattice of spacing 2r (r = particle radius), ``n_x × n_y × n_z``
particles, SPlisHSPlasH's ``FluidBlocks`` sampling. A block of extent ``(n + 1) · 2r`` per axis
holds ``n`` particles per axis, at ``2r, 4r, ..., 2nr`` from its lower corner, so a block that
touches a wall keeps its particles one diameter away from it.

Measured here (2 shared cores, ``threads=1``, another job using ~1 core): a default trajectory
(300 frames = 1.5 s, 1200 solver steps) of 8,360 particles takes ~33 s, ~3.3 µs per particle
and step; block edges 0.4-0.6 m give 15-23 particles per axis, 3,375-12,167 particles (first
six training trajectories: 5,760-10,143). The default dataset (6 + 1 + 1 trajectories) took
4.4 min and ~400 MB (h5 + tfrecord). At the default connectivity radius 0.04 a particle has
13 neighbours on average over those trajectories (per-frame means 8-17; 18 in the initial
lattice), close to the authors' Water-3D graphs (99k edges on 7.8k nodes, 12.7 per node); at
Water-3D's 0.035 it would have ~8. About 1-3 % of the particles are thrown off at 6-22 m/s
in thin jets when the block hits the floor; halving the time step gives the same numbers, so
these are the discretisation's splashes, not a time-step instability. A single large frame:
``particle_radius=0.005, block_size_range=(0.48, 0.48), time_step=0.0005, initial_speed=0``
gives 103,823 particles (47³, ~109k wall particles), 3 frames in ~6 s, 17 neighbours per
particle at the default radius (1.8M directed edges).

Process model: each trajectory runs in a child process (`_splishsplash_worker.py`, ~0.3 s to
start) with ``OMP_NUM_THREADS`` set, its working directory and output directory in a temporary
directory that is removed afterwards, and SPlisHSPlasH's log captured there (its last lines
are quoted if it fails). SPlisHSPlasH keeps global state between scenes, prints its log on
stdout and calls ``exit()`` on some errors; a child keeps all of that out of the caller.
With one thread the results are bitwise reproducible.

Pipeline::

    SPHSceneSettings -> scene_layout(settings, index) -> simulate_scene -> SPHTrajectory
    generate_sph_dataset -> fastegnn_md.adapters.sph.write_dataset (h5 + tfrecord, metadata.json)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from tqdm.auto import tqdm

from ..conventions import SPLITS
from ..errors import DataError
from .sph import DEEPMIND_KINEMATIC, DEEPMIND_WATER, FORMATS, SPHTrajectory, write_dataset
from .sph.walls import box_wall_particles

PathLike = Union[str, os.PathLike]

#: DeepMind particle types of the water and of the stored walls (kinematic: inputs only).
WATER_TYPE = DEEPMIND_WATER
WALL_TYPE = DEEPMIND_KINEMATIC
#: Rest density of the fluid, kg/m³ (water).
DENSITY0 = 1000.0
#: Scene kinds (`SPHSceneSettings.scenes`, `scene_layout`).
SCENES = ("block", "dam_break", "drop")
#: Layers of water in a "drop" scene's pool (inclusive range).
POOL_LAYERS = (2, 4)
#: Extra gap (diameters) between a wall and a block placed against it (dam break, pool). With the
#: lattice's own diameter only, the first frames blew particles off at 4-6 m/s (the fluid and the
#: solver's wall particles overlap in density at a wall); with half a diameter more, < 0.1 m/s.
WALL_GAP = 0.5
#: Connectivity radius / particle diameter when ``SPHSceneSettings.connectivity_radius`` is None.
#: 1.6 diameters lies between the lattice's second (√2) and third (√3) neighbour shells, so the
#: initial lattice gives 18 neighbours and no pair sits on the cutoff (Water-3D's 0.035 with
#: diameter 0.025 is 1.4 diameters, within 1% of the √2 shell).
CONNECTIVITY_DIAMETERS = 1.6
_WORKER = Path(__file__).with_name("_splishsplash_worker.py")
_BOOTSTRAP = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"


@dataclass(frozen=True)
class SPHSceneSettings:
    """What every trajectory of a dataset shares; SI units (metres, seconds) unless noted.

    Attributes
    ----------
    box_size : edge of the closed cubic box ``[0, box_size]³``, m. Dataset coordinates are
        positions / box_size (the unit cube).
    particle_radius : r, m. Fluid particles start on a lattice of spacing 2r; SPlisHSPlasH's
        kernel support radius is 4r.
    connectivity_radius : ``metadata["default_connectivity_radius"]``, in dataset units
        (fraction of box_size); None = `CONNECTIVITY_DIAMETERS` particle diameters.
    time_step : fixed solver step, s (no CFL adaptivity).
    frame_interval : time between stored frames, s; a whole number of time steps.
    num_frames : stored frames per trajectory, including the initial state (frame 0);
        ``metadata["sequence_length"]`` is num_frames − 1.
    gravity : acceleration along −y, m/s².
    block_size_range : (min, max) extent of the water block along each axis, m; each axis is
        drawn independently and rounded to whole particles (see the module docstring).
    min_block_height : lowest allowed height of the block's lower face above the floor, m (the
        block always falls at least this far).
    initial_speed : each component of the block's initial velocity is uniform in
        ``[-initial_speed, initial_speed]``, m/s.
    viscosity : coefficient of SPlisHSPlasH's "Standard" viscosity (``Viscosity_Standard``).
    seed : trajectory ``index`` of split ``split_index`` uses ``default_rng([seed, split_index, index])``.
    store_walls : append the box's walls to every stored trajectory as kinematic particles (type 3,
        `with_box_walls`); False stores the water alone (the format before issue 16).
    scenes : the scene kinds trajectories are drawn from (`SCENES`; `scene_layout`): "block" (one
        block dropped with a random velocity), "dam_break" (a block at rest in a corner on the
        floor), "drop" (a small block falling into a pool that covers the floor).
    """

    box_size: float = 1.0
    particle_radius: float = 0.0125
    connectivity_radius: Optional[float] = None
    time_step: float = 0.00125
    frame_interval: float = 0.005
    num_frames: int = 300
    gravity: float = 9.81
    block_size_range: tuple[float, float] = (0.4, 0.6)
    min_block_height: float = 0.2
    initial_speed: float = 1.0
    viscosity: float = 0.01
    seed: int = 0
    store_walls: bool = True
    scenes: tuple[str, ...] = SCENES

    @property
    def diameter(self) -> float:
        """Particle diameter 2r, m: the initial lattice spacing."""
        return 2.0 * self.particle_radius

    @property
    def steps_per_frame(self) -> int:
        """Solver steps between stored frames."""
        return int(round(self.frame_interval / self.time_step))

    @property
    def default_connectivity_radius(self) -> float:
        """The connectivity radius in dataset units (fraction of box_size)."""
        if self.connectivity_radius is not None:
            return float(self.connectivity_radius)
        return CONNECTIVITY_DIAMETERS * self.diameter / self.box_size

    @property
    def particles_per_axis_range(self) -> tuple[int, int]:
        """Smallest and largest particle count along one axis of a block."""
        low, high = self.block_size_range
        n_low = math.ceil(low / self.diameter - 1e-9) - 1
        return max(n_low, 2), math.floor(high / self.diameter + 1e-9) - 1

    def validate(self) -> None:
        """Raise `DataError` (one line naming the setting) if no trajectory can be made."""
        for name in ("box_size", "particle_radius", "time_step", "frame_interval"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise DataError(f"SPH settings: {name} must be a positive number, got {value!r}")
        for name in ("gravity", "initial_speed", "viscosity", "min_block_height"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise DataError(f"SPH settings: {name} must be a number >= 0, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise DataError(f"SPH settings: seed must be an integer >= 0, got {self.seed!r}")
        if isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int) or self.num_frames < 3:
            raise DataError(
                f"SPH settings: num_frames must be an integer >= 3 (velocity and acceleration "
                f"statistics need 3 frames), got {self.num_frames!r}"
            )
        ratio = self.frame_interval / self.time_step
        if abs(ratio - round(ratio)) > 1e-6 * ratio or round(ratio) < 1:
            raise DataError(
                f"SPH settings: frame_interval {self.frame_interval} s must be a whole number of "
                f"time steps of {self.time_step} s"
            )
        if self.connectivity_radius is not None and not (
            math.isfinite(self.connectivity_radius) and self.connectivity_radius > 0
        ):
            raise DataError(f"SPH settings: connectivity_radius must be positive, got {self.connectivity_radius!r}")
        try:
            low, high = (float(value) for value in self.block_size_range)
        except (TypeError, ValueError):
            raise DataError(
                f"SPH settings: block_size_range must be (min, max) in m, got {self.block_size_range!r}"
            ) from None
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise DataError(f"SPH settings: block_size_range must be 0 < min <= max, got {self.block_size_range}")
        if high > self.box_size:
            raise DataError(
                f"SPH settings: block_size_range max {high} m does not fit in the box of {self.box_size} m"
            )
        if self.min_block_height + high > self.box_size:
            raise DataError(
                f"SPH settings: a block of {high} m at min_block_height {self.min_block_height} m reaches "
                f"above the box of {self.box_size} m"
            )
        # n particles per axis need an extent of (n + 1) diameters (SPlisHSPlasH's block sampling).
        n_low, n_high = self.particles_per_axis_range
        if n_high < 2:
            raise DataError(
                f"SPH settings: block_size_range max {high} m holds fewer than 2 particles per axis at "
                f"particle_radius {self.particle_radius} m (n particles need (n + 1) x {self.diameter:g} m)"
            )
        if n_high < n_low:
            raise DataError(
                f"SPH settings: no whole number of particles fits block_size_range {low}..{high} m at "
                f"particle_radius {self.particle_radius} m (n particles need (n + 1) x {self.diameter:g} m)"
            )
        scenes = self.scenes
        if (isinstance(scenes, str) or not isinstance(scenes, (tuple, list)) or not scenes
                or any(scene not in SCENES for scene in scenes)):
            raise DataError(f"SPH settings: scenes must be a non-empty list of {', '.join(SCENES)}, got {scenes!r}")
        if "drop" in scenes:
            pool = (POOL_LAYERS[1] + 1 + WALL_GAP) * self.diameter
            if pool + (n_low + 1) * self.diameter + self.diameter > self.box_size:
                raise DataError(
                    f"SPH settings: a 'drop' scene's pool ({POOL_LAYERS[1]} layers) and a block of {n_low} particles "
                    f"per axis do not fit one above the other in the box of {self.box_size} m"
                )
        # A particle moving more than a diameter per step passes through its neighbours (and the
        # wall particles): refuse time steps clearly beyond the CFL limit of the fastest fall.
        speed = math.sqrt(2.0 * self.gravity * self.box_size) + math.sqrt(3.0) * self.initial_speed
        if speed * self.time_step > self.diameter:
            raise DataError(
                f"SPH settings: time_step {self.time_step} s lets the fastest particle (~{speed:.2g} m/s) "
                f"move {speed * self.time_step:.3g} m per step, more than a particle diameter "
                f"({self.diameter:g} m); use a time_step below {0.4 * self.diameter / speed:.2g} s"
            )


@dataclass(frozen=True)
class FluidBlock:
    """One block of water on SPlisHSPlasH's lattice.

    Attributes
    ----------
    particles_per_axis : (n_x, n_y, n_z) lattice counts; N = n_x n_y n_z.
    block_min, block_max : corners of SPlisHSPlasH's fluid block, m; particles sit at
        ``block_min + 2r · (1..n)`` per axis.
    initial_velocity : (3,) m/s, the same for every particle of the block.
    """

    particles_per_axis: tuple[int, int, int]
    block_min: tuple[float, float, float]
    block_max: tuple[float, float, float]
    initial_velocity: tuple[float, float, float]

    @property
    def num_particles(self) -> int:
        n_x, n_y, n_z = self.particles_per_axis
        return n_x * n_y * n_z

    def as_dict(self) -> dict[str, Any]:
        """The block as ``metadata.json`` records it (m, m/s)."""
        return {"particles_per_axis": list(self.particles_per_axis), "block_min_m": list(self.block_min),
                "block_max_m": list(self.block_max), "initial_velocity_m_per_s": list(self.initial_velocity)}


@dataclass(frozen=True)
class SceneLayout:
    """The random part of one trajectory: its scene kind and its water blocks (in the order
    SPlisHSPlasH creates them, so the particles of block 0 come first).

    Attributes
    ----------
    index, split_index : which trajectory (and split) this is.
    scene : one of `SCENES`.
    blocks : the water blocks.
    """

    index: int
    split_index: int
    scene: str
    blocks: tuple[FluidBlock, ...]

    @property
    def num_particles(self) -> int:
        return sum(block.num_particles for block in self.blocks)


def scene_layout(settings: SPHSceneSettings, index: int, split_index: int = 0) -> SceneLayout:
    """Draw trajectory ``index`` of split ``split_index``, reproducibly.

    The scene kind is drawn from ``settings.scenes`` with ``default_rng([seed, split_index,
    index, 1])`` (the only kind when there is one); the blocks of the scene from
    ``default_rng([seed, split_index, index])``, so a "block" trajectory is the same whatever
    other kinds are allowed (and the same as datasets made before scene kinds existed):

    * **block**: per axis a particle count n uniform in `SPHSceneSettings.particles_per_axis_range`,
      the lower corner uniform in ``[0, box_size - extent]`` (y: from ``min_block_height``), each
      velocity component uniform in ``±initial_speed``;
    * **dam_break**: counts as a block, at rest on the floor in a random corner of the box
      (`WALL_GAP` diameters off the walls);
    * **drop**: a pool covering the floor (`POOL_LAYERS` layers, drawn; `WALL_GAP` off the walls), then a block of
      n_low // 2 .. n_low particles per axis at a random place above it (at least one diameter
      clear), falling with a downward speed uniform in ``[0, initial_speed]`` and horizontal
      components uniform in ``±initial_speed / 2``.
    """
    settings.validate()
    if index < 0 or split_index < 0:
        raise DataError(f"SPH trajectory index and split index must be >= 0, got {index}, {split_index}")
    scenes = tuple(settings.scenes)
    scene = scenes[0] if len(scenes) == 1 else scenes[
        int(np.random.default_rng([settings.seed, split_index, index, 1]).integers(len(scenes)))]
    rng = np.random.default_rng([settings.seed, split_index, index])
    blocks = {"block": _falling_block, "dam_break": _dam_break, "drop": _drop}[scene](settings, rng)
    return SceneLayout(index=int(index), split_index=int(split_index), scene=scene, blocks=tuple(blocks))


def _block(counts: np.ndarray, lower: np.ndarray, velocity: np.ndarray, diameter: float) -> FluidBlock:
    extent = (counts + 1) * diameter
    return FluidBlock(
        particles_per_axis=tuple(int(n) for n in counts), block_min=tuple(float(v) for v in lower),
        block_max=tuple(float(v) for v in lower + extent), initial_velocity=tuple(float(v) for v in velocity),
    )


def _falling_block(settings: SPHSceneSettings, rng: np.random.Generator) -> list[FluidBlock]:
    n_low, n_high = settings.particles_per_axis_range
    counts = rng.integers(n_low, n_high + 1, size=3)
    extent = (counts + 1) * settings.diameter
    floor = np.array([0.0, settings.min_block_height, 0.0])
    lower = floor + rng.random(3) * np.maximum(settings.box_size - extent - floor, 0.0)
    velocity = rng.uniform(-settings.initial_speed, settings.initial_speed, size=3)
    return [_block(counts, lower, velocity, settings.diameter)]


def _dam_break(settings: SPHSceneSettings, rng: np.random.Generator) -> list[FluidBlock]:
    n_low, n_high = settings.particles_per_axis_range
    counts = rng.integers(n_low, n_high + 1, size=3)
    extent = (counts + 1) * settings.diameter
    corner = rng.integers(0, 2, size=3)
    corner[1] = 0  # on the floor
    gap = WALL_GAP * settings.diameter
    lower = np.where(corner == 1, settings.box_size - extent - gap, gap)
    return [_block(counts, lower, np.zeros(3), settings.diameter)]


def _drop(settings: SPHSceneSettings, rng: np.random.Generator) -> list[FluidBlock]:
    d, box = settings.diameter, settings.box_size
    gap = WALL_GAP * d
    across = math.floor((box - 2 * gap) / d + 1e-9) - 1  # the most particles a block fits along the floor
    layers = int(rng.integers(POOL_LAYERS[0], POOL_LAYERS[1] + 1))
    pool = _block(np.array([across, layers, across]), np.full(3, gap), np.zeros(3), d)
    n_low = settings.particles_per_axis_range[0]
    counts = rng.integers(max(n_low // 2, 2), n_low + 1, size=3)
    extent = (counts + 1) * d
    floor = np.array([0.0, pool.block_max[1] + d, 0.0])
    lower = floor + rng.random(3) * np.maximum(box - extent - floor, 0.0)
    velocity = np.array([rng.uniform(-0.5, 0.5), -rng.random(), rng.uniform(-0.5, 0.5)]) * settings.initial_speed
    return [pool, _block(counts, lower, velocity, d)]


def scene_description(settings: SPHSceneSettings, layout: SceneLayout, box_mesh: PathLike) -> dict[str, Any]:
    """The SPlisHSPlasH scene (JSON object) of one trajectory; ``box_mesh`` is a unit-cube OBJ."""
    return {
        "Configuration": {
            "particleRadius": settings.particle_radius,
            "simulationMethod": 4,  # DFSPH
            "gravitation": [0.0, -settings.gravity, 0.0],
            "timeStepSize": settings.time_step,
            "cflMethod": 0,  # fixed time step
            "enableZSort": False,  # keep particle order fixed (row i = particle i in every frame)
            "boundaryHandlingMethod": 0,  # Akinci et al. 2012 wall particles
            "enablePartioExport": False,
            "enableVTKExport": False,
            "enableRigidBodyExport": False,
            "enableRigidBodyVTKExport": False,
            "enableStateExport": False,
            "DFSPH": {
                "maxIterations": 100, "maxError": 0.05,  # % density error (SPlisHSPlasH scenes' value)
                "maxIterationsV": 100, "maxErrorV": 0.1,
                "enableDivergenceSolver": True,
            },
        },
        "Materials": [{
            "id": "Fluid",
            "density0": DENSITY0,
            "viscosityMethod": 1,  # standard
            # Method parameters sit in a block named after the method: a flat "viscosity" key is
            # silently ignored by SPlisHSPlasH 2.19 (checked by reading the value back).
            "Standard viscosity": {"viscosity": settings.viscosity},
            "maxEmitterParticles": 0,
        }],
        "RigidBodies": [{
            "geometryFile": str(Path(box_mesh).resolve()),
            "translation": [0.0, 0.0, 0.0],
            "scale": [settings.box_size] * 3,
            "isDynamic": False,
            "isWall": True,
            "samplingMode": 1,  # regular triangle sampling (Poisson disk sampling is random)
        }],
        "FluidBlocks": [{
            "id": "Fluid",  # one fluid model: the blocks' particles in block order
            "denseMode": 0,  # regular lattice of spacing 2r
            "start": list(block.block_min),
            "end": list(block.block_max),
            "initialVelocity": list(block.initial_velocity),
        } for block in layout.blocks],
    }


def _write_box_mesh(path: Path) -> Path:
    """A closed unit cube ``[0, 1]³`` as OBJ (12 triangles, outward normals)."""
    vertices = [(x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1)]  # vertex k: bits x, y, z
    quads = [(1, 3, 4, 2), (5, 6, 8, 7), (1, 2, 6, 5), (3, 7, 8, 4), (1, 5, 7, 3), (2, 4, 8, 6)]
    lines = [f"v {x} {y} {z}" for x, y, z in vertices]
    for a, b, c, d in quads:
        lines += [f"f {a} {b} {c}", f"f {a} {c} {d}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _require_solver() -> None:
    """DataError unless pysplishsplash is importable (the child imports it; this fails earlier)."""
    import importlib.util

    if importlib.util.find_spec("pysplishsplash") is None:
        raise DataError(
            "SPH: pysplishsplash is not installed (pip install pysplishsplash; it needs libGL, e.g. Debian libgl1)"
        )


def solver_version() -> str:
    """Installed pysplishsplash version (the SPlisHSPlasH release it wraps), or "unknown"."""
    from importlib import metadata

    try:
        return metadata.version("pysplishsplash")
    except metadata.PackageNotFoundError:
        return "unknown"


def simulate_scene(
    settings: SPHSceneSettings,
    index: int,
    split_index: int = 0,
    threads: int = 1,
    work_dir: Optional[PathLike] = None,
) -> SPHTrajectory:
    """Simulate one trajectory with SPlisHSPlasH.

    Parameters
    ----------
    settings : shared scene settings (validated here).
    index, split_index : which trajectory; its layout is `scene_layout(settings, index, split_index)`.
    threads : OpenMP threads of the solver (``OMP_NUM_THREADS`` of the child process); 1 is
        bitwise reproducible and, on a shared machine, fastest per core.
    work_dir : existing directory for the temporary scene files (a subdirectory is made and
        removed); default: the system temporary directory.

    Returns
    -------
    SPHTrajectory with ``positions`` float32 (T, N, 3) in dataset units (metres / box_size;
    frame t at time ``t · frame_interval``), ``particle_type`` int64 (N,) all `WATER_TYPE`,
    ``key`` = index, ``convention`` "deepmind".

    Raises
    ------
    DataError
        For impossible settings, pysplishsplash missing or failing (with the last lines of its
        log), or a result that left the box or is not finite.
    """
    layout = scene_layout(settings, index, split_index)
    _check_threads(threads)
    _require_solver()
    with tempfile.TemporaryDirectory(prefix="fastegnn-sph-", dir=work_dir) as tmp:
        positions = _run_child(settings, layout, Path(tmp), threads)
    where = f"SPH trajectory {index} (split {split_index})"
    if not np.isfinite(positions).all():
        raise DataError(f"{where}: SPlisHSPlasH produced non-finite positions; try a smaller time_step")
    # Wall particles keep the fluid about a radius inside the walls; a particle a radius beyond
    # one went through it (solver instability).
    slack = settings.particle_radius
    if positions.min() < -slack or positions.max() > settings.box_size + slack:
        raise DataError(
            f"{where}: particles left the box (coordinates {positions.min():.3g}..{positions.max():.3g} m, "
            f"box 0..{settings.box_size} m); try a smaller time_step"
        )
    scaled = (positions / np.float32(settings.box_size)).astype(np.float32, copy=False)
    types = np.full(layout.num_particles, WATER_TYPE, dtype=np.int64)
    return SPHTrajectory(positions=scaled, particle_type=types, key=int(index), convention="deepmind")


def wall_spacing(settings: SPHSceneSettings) -> float:
    """Spacing of the stored wall particles in dataset units: the fluid's lattice spacing 2r / box_size."""
    return settings.diameter / settings.box_size


def with_box_walls(trajectory: SPHTrajectory, settings: SPHSceneSettings) -> SPHTrajectory:
    """``trajectory`` (water, dataset units) with the box's walls appended after the water: the
    `box_wall_particles` lattice of the unit cube at `wall_spacing`, the same in every frame,
    particle type `WALL_TYPE` (DeepMind's kinematic type, inputs only everywhere downstream)."""
    walls = box_wall_particles(np.array([[0.0, 1.0]] * 3), wall_spacing(settings)).astype(np.float32)
    frames = trajectory.positions.shape[0]
    positions = np.concatenate([trajectory.positions, np.broadcast_to(walls, (frames, *walls.shape))], axis=1)
    types = np.concatenate([trajectory.particle_type, np.full(len(walls), WALL_TYPE, dtype=np.int64)])
    return SPHTrajectory(positions=positions, particle_type=types, key=trajectory.key,
                         convention=trajectory.convention)


def _check_threads(threads: int) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise DataError(f"SPH: threads must be an integer >= 1, got {threads!r}")


def _run_child(settings: SPHSceneSettings, layout: SceneLayout, tmp: Path, threads: int) -> np.ndarray:
    """Write the scene and job files into ``tmp``, run the worker there; positions (T, N, 3) in m."""
    scene_file = tmp / "scene.json"
    scene = scene_description(settings, layout, _write_box_mesh(tmp / "box.obj"))
    scene_file.write_text(json.dumps(scene, indent=1), encoding="utf-8")
    job = {
        "scene": str(scene_file),
        "output_dir": str(tmp / "output"),
        "positions": str(tmp / "positions.npy"),
        "info": str(tmp / "info.json"),
        "num_frames": settings.num_frames,
        "steps_per_frame": settings.steps_per_frame,
        "time_step": settings.time_step,
        "num_particles": layout.num_particles,
    }
    job_file = tmp / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on a shared machine
    log_file = tmp / "solver.log"
    where = f"SPH trajectory {layout.index} (split {layout.split_index})"
    with open(log_file, "wb") as log:
        status = subprocess.run(
            [sys.executable, "-c", _BOOTSTRAP, str(_WORKER), str(job_file)],
            cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        ).returncode
    info = _read_json(tmp / "info.json")
    if status != 0 or "error" in info or not (tmp / "positions.npy").is_file():
        reason = info.get("error") or (f"killed by signal {-status}" if status < 0 else f"exit status {status}")
        raise DataError(f"{where}: SPlisHSPlasH failed: {reason}{_log_tail(log_file)}")
    return np.load(tmp / "positions.npy")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _log_tail(path: Path, lines: int = 3) -> str:
    """`` (log: a | b | c)`` with the last non-empty lines of the solver's log, or ""."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return f" (log: {' | '.join(tail)})" if tail else ""


def dataset_metadata(
    settings: SPHSceneSettings, layouts: dict[str, list[SceneLayout]]
) -> dict[str, Any]:
    """``metadata.json`` content except the statistics `write_dataset` computes (vel/acc mean, std)."""
    return {
        "bounds": [[0.0, 1.0]] * 3,
        "sequence_length": settings.num_frames - 1,
        "default_connectivity_radius": settings.default_connectivity_radius,
        "dim": 3,
        "dt": settings.frame_interval,
        "particle_type_convention": "deepmind",
        "generator": {
            "name": "fastegnn_md.adapters.splishsplash",
            "solver": "SPlisHSPlasH (pysplishsplash), DFSPH",
            "solver_version": solver_version(),
            "boundary_handling": (
                "Akinci et al. 2012 wall particles in the solver; stored: the box's walls as kinematic particles "
                "(type 3) on a lattice at the fluid spacing" if settings.store_walls
                else "Akinci et al. 2012 wall particles (not stored)"
            ),
            "walls": {
                "particle_type": WALL_TYPE, "spacing": wall_spacing(settings),
                "particles": len(box_wall_particles(np.array([[0.0, 1.0]] * 3), wall_spacing(settings))),
            } if settings.store_walls else None,
            "length_unit_m": settings.box_size,
            "time_unit": "s",
            "gravity_axis": "-y",
            "settings": asdict(settings),
            "steps_per_frame": settings.steps_per_frame,
            "splits": {name: len(items) for name, items in layouts.items()},
            "trajectories": {
                name: [
                    {
                        "key": layout.index,
                        "scene": layout.scene,
                        "num_particles": layout.num_particles,
                        "blocks": [block.as_dict() for block in layout.blocks],
                    }
                    for layout in items
                ]
                for name, items in layouts.items()
            },
        },
    }


def generate_sph_dataset(
    out_dir: PathLike,
    settings: Optional[SPHSceneSettings] = None,
    num_train: int = 6,
    num_valid: int = 1,
    num_test: int = 1,
    progress: bool = True,
    threads: int = 1,
    formats: Sequence[str] = FORMATS,
) -> Path:
    """Simulate the train/valid/test trajectories and write them as an SPH dataset directory.

    Trajectory k of split s (s = 0, 1, 2 for train, valid, test) is `simulate_scene(settings,
    k, s)`, followed by the box's walls (`with_box_walls`) unless ``settings.store_walls`` is
    False. Files (`fastegnn_md.adapters.sph.write_dataset`): ``{split}.h5`` and/or
    ``{split}.tfrecord`` (positions float32 (T, N, 3) in units of box_size, particle types 5 for
    the water and 3 for the walls), then ``metadata.json`` with DeepMind's keys (``bounds`` the unit cube, ``dt`` the frame
    interval in s, ``vel_*``/``acc_*`` from the train split, in length per frame and per
    frame²), ``particle_type_convention`` and ``generator`` (settings, solver version, each
    trajectory's layout). Every file is written atomically, ``metadata.json`` last.
    ``progress`` shows a tqdm bar over trajectories. Returns ``out_dir``.

    Raises
    ------
    DataError
        For impossible settings or counts (before anything is simulated) and solver failures.
    """
    settings = settings or SPHSceneSettings()
    settings.validate()
    counts = dict(zip(SPLITS, (num_train, num_valid, num_test)))
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise DataError(f"SPH dataset: num_{name} must be an integer >= 0, got {count!r}")
    if counts["train"] < 1:
        raise DataError("SPH dataset: num_train must be >= 1 (the normalisation statistics come from it)")
    _check_threads(threads)
    _require_solver()
    formats = tuple(formats)
    if not formats or any(fmt not in FORMATS for fmt in formats):
        raise DataError(f"SPH dataset: formats must be a non-empty subset of {FORMATS}, got {formats}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a directory")
    layouts = {
        name: [scene_layout(settings, k, split_index) for k in range(count)]
        for split_index, (name, count) in enumerate(counts.items())
        if count > 0
    }
    splits: dict[str, list[SPHTrajectory]] = {}
    with tqdm(total=sum(counts.values()), desc="SPlisHSPlasH", unit="traj", disable=not progress) as bar:
        for split_index, name in enumerate(SPLITS):
            for layout in layouts.get(name, []):
                bar.set_postfix_str(f"{name} {layout.index}, {layout.num_particles} particles")
                trajectory = simulate_scene(settings, layout.index, split_index, threads=threads)
                splits.setdefault(name, []).append(
                    with_box_walls(trajectory, settings) if settings.store_walls else trajectory
                )
                bar.update(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metadata.json").unlink(missing_ok=True)  # metadata marks a complete dataset
    write_dataset(out_dir, splits, dataset_metadata(settings, layouts), formats=formats)
    return out_dir
