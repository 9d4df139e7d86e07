"""Child-process side of `fastegnn_md.adapters.splishsplash`: run one SPlisHSPlasH scene.

Run as ``python -c "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
<this file> <job.json>`` by `splishsplash.simulate_scene`, never imported by the package. It
imports only the standard library, numpy and pysplishsplash, so a child starts in ~0.3 s
instead of the ~4 s that importing fastegnn_md (torch) costs.

Why a separate process per trajectory: SPlisHSPlasH keeps global state (current simulation,
time manager, a logger that gains a console and a file sink on every ``init``), prints its log
on stdout, calls ``exit()`` on some errors and reads ``OMP_NUM_THREADS`` once, when its
OpenMP runtime loads. A child with its own environment, working directory and stdout contains
all of that.

Job file (JSON): ``scene`` (absolute path of the scene file), ``output_dir`` (SPlisHSPlasH's
log directory), ``positions`` (.npy written here), ``info`` (.json written here),
``num_frames`` T, ``steps_per_frame`` (solver steps between stored frames) and
``num_particles`` N (expected). Output: positions float32 (T, N, 3) in metres, frame 0 the
initial state; info: particle count, simulated time, solver steps, version.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

import numpy as np


def _load_solver():
    # pysplishsplash's wheel links OpenGL through libglvnd; without libGLdispatch loaded
    # globally first, importing it segfaults (measured, DATA-NOTES.md).
    try:
        ctypes.CDLL("libGLdispatch.so.0", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass  # let the import report what is missing
    import pysplishsplash

    return pysplishsplash


def run(job: dict) -> dict:
    """Simulate the job's scene; write positions (.npy) and return the info dict."""
    sph = _load_solver()
    num_frames = int(job["num_frames"])
    steps_per_frame = int(job["steps_per_frame"])
    base = sph.Exec.SimulatorBase()
    # stopAt must be positive without a GUI (runSimulation exits otherwise); the time-step
    # callback ends the run itself after the last frame, so this is only an upper bound.
    base.init(
        useGui=False, sceneFile=job["scene"], useCache=False, outputDir=job["output_dir"],
        initialPause=False, stopAt=float(num_frames * steps_per_frame + 10) * float(job["time_step"]) + 1.0,
    )
    base.initSimulation()
    sim = sph.Simulation.getCurrent()
    if sim.zSortEnabled():
        raise RuntimeError("z-sort is enabled: particle order would change between frames")
    if sim.numberOfFluidModels() != 1:
        raise RuntimeError(f"expected one fluid model, got {sim.numberOfFluidModels()}")
    fluid = sim.getFluidModel(0)
    n = int(fluid.numActiveParticles())
    if n != int(job["num_particles"]):
        raise RuntimeError(f"SPlisHSPlasH made {n} fluid particles, expected {job['num_particles']}")

    def field(name: str) -> np.ndarray:
        # Fetched anew for every frame (cheap: a view of the solver's array) in case the solver
        # reallocated it. It holds room for emitted particles too: the first n rows are the fluid.
        return np.asarray(fluid.getFieldBuffer(name))

    positions = np.empty((num_frames, n, 3), dtype=np.float32)
    positions[0] = field("position").reshape(-1, 3)[:n]
    state = {"steps": 0, "frame": 1}

    def after_step() -> None:
        state["steps"] += 1
        if state["steps"] % steps_per_frame or state["frame"] >= num_frames:
            return
        positions[state["frame"]] = field("position").reshape(-1, 3)[:n]
        state["frame"] += 1
        if state["frame"] == num_frames:
            # timeStepNoGUI stops once 0 < stopAt < time: end the run after this step.
            base.setValueFloat(base.STOP_AT, 1e-12)

    if num_frames > 1:
        base.setTimeStepCB(after_step)
        base.runSimulation()
    if state["frame"] != num_frames or state["steps"] != (num_frames - 1) * steps_per_frame:
        raise RuntimeError(f"recorded {state['frame']} of {num_frames} frames in {state['steps']} steps")
    # Particle identity: the solver's own id field must still be 0..n-1 in buffer order.
    ids = field("id")[:n]
    if not np.array_equal(ids, np.arange(n, dtype=ids.dtype)):
        raise RuntimeError("particle ids were reordered during the simulation")
    np.save(job["positions"], positions)
    return {
        "num_particles": n,
        "steps": state["steps"],
        "time": float(sph.TimeManager.getCurrent().getTime()),
        "num_boundary_models": int(sim.numberOfBoundaryModels()),
    }


def main(job_file: str) -> None:
    with open(job_file, encoding="utf-8") as handle:
        job = json.load(handle)
    try:
        info = run(job)
    except Exception as exc:  # reported to the parent through the info file and exit status
        info = {"error": f"{type(exc).__name__}: {exc}"}
    with open(job["info"], "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    sys.stdout.flush()
    # Skip interpreter teardown: SPlisHSPlasH's static destructors only print timing tables.
    os._exit(1 if "error" in info else 0)


if __name__ == "__main__":
    main(sys.argv[-1])  # the job file is the last argument however this file was started
