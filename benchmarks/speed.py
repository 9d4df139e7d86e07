"""Forward-pass speed and peak memory of FastEGNN (and EGNN for reference) on the graph sizes
of the paper's three benchmarks.

    python benchmarks/speed.py                 # all cases, 2 threads, float32
    python benchmarks/speed.py --threads 1 --repeats 30
    python benchmarks/speed.py --rounds 3      # three runs over all cases, medians over runs
    python benchmarks/speed.py --against-reference --cases 1 --repeats 5
                                               # fast FastEGNN vs the plain reference, case 1 only
    python benchmarks/speed.py --device cuda   # the same on a GPU (benchmarks/device_check.sh)
    python benchmarks/speed.py --against-reference --compile   # and torch.compile(fast model) beside it

Each case runs in its own subprocess so that peak memory (ru_maxrss growth over the process
after the graph and model are built) belongs to that case alone. Graphs are synthetic uniform
clouds whose node and edge counts match the paper's datasets (Appendix C, Table 4): the
forward cost depends on those counts, not on where the points are. Times are medians over
``--repeats`` calls after warm-up; the machine is shared, so compare numbers from one run.

Two floors go with each time. The computed one counts the model's matmul FLOPs and SiLU
evaluations at rates measured on one large shape. The replay (`dense_replay.py`) issues the
forward pass's own matmul and SiLU calls, at their real shapes and with nothing else, in
alternation with the model: no rearrangement of the same model in eager PyTorch can take
less time than that replay.

``--against-reference`` times, per case, the fast FastEGNN against the plain reference of the
paper's equations on the same weights and graph (`fastegnn_md.models.reference`), calls
alternating in one process: a forward pass (inference mode) and a training step (forward, MSE
on positions, backward; no optimizer). Memory beside it: the bytes autograd saves for the
backward pass (distinct storages, exact), and the growth of the process's peak RSS after the
fast model's warm-up calls and after the reference's (the reference's figure is a high-water
mark over both, so it shows the reference's own peak only where that is the larger). The
reference builds every concatenated message input whole: on the N-body case (~500k edges) a
training step holds several GiB.

``--device cuda`` runs both modes on the GPU (graphs are still built on the CPU and copied once,
outside the clock). Every timed call is bracketed by ``torch.cuda.synchronize()``, so a time runs
from the first launch until the GPU has finished, not just the launches. Memory there is CUDA
memory: the growth of ``torch.cuda.max_memory_allocated`` over what the graph and model hold,
its peak statistics reset per case (and per model against the reference, so each peak is that
model's own). The two floors are CPU figures (measured CPU rates, a CPU replay) and are not
computed on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    nodes: int
    graphs: int  # graphs in the batch (times are reported per graph)
    box: float  # side of the cube the points fill
    cutoff: float | None  # None = fully connected
    drop_rate: float
    target_ms: float  # the goal for FastEGNN<3,p>, ms per graph


CASES = [
    Case("protein 855 nodes, ~55k edges", 855, 1, 33.5, 10.0, 0.0, 80.0),
    Case("protein 855 nodes, all edges dropped", 855, 1, 33.5, 10.0, 1.0, 5.0),
    Case("water-3d 7806 nodes, ~95k edges", 7806, 1, 0.474, 0.035, 0.0, 135.0),
    Case("water-3d 7806 nodes, all edges dropped", 7806, 1, 0.474, 0.035, 1.0, 45.0),
    Case("n-body 50 x 100 nodes, fully connected", 100, 50, 3.0, None, 0.0, 18.0),
]


def work_counts(case: Case, edges_per_graph: float, model_name: str, hidden: int = 64,
                channels: int = 3, layers: int = 4) -> tuple[float, float]:
    """(matmul FLOPs, SiLU evaluations) per graph of one forward pass, as the code does them.

    Counts the dense layers and activations of EdgeBlock, VirtualMessage, ScalarHeads, phi_v and
    NodeUpdate (split first layers, final layer without h/s updates), i.e. the arithmetic that no
    reorganisation of the same model can remove.
    """
    n, e, h = case.nodes, edges_per_graph, hidden
    fastegnn = model_name == "fastegnn"
    r = n * channels if fastegnn else 0
    flops = silu = 0.0
    for layer in range(layers):
        final = layer == layers - 1
        if e:
            flops += 2 * (2 * n * h * h) + 2 * (2 * e * h * h) + 2 * e * h * 4
            silu += 3 * e * h
        flops += 2 * n * h * h + 2 * n * h  # phi_v
        silu += n * h
        if fastegnn:
            flops += 2 * n * h * h + 2 * r * h * h + 2 * r * h * 2 * h + 2 * r * 2 * h * 2
            silu += r * h * 4
        if not final:
            flops += 2 * n * h * h * (2 + (1 if e else 0) + (channels if fastegnn else 0))
            silu += n * h
    return flops, silu


def machine_rates(threads: int, repeats: int = 30, dtype=None) -> tuple[float, float]:
    """Measured rates here in ``dtype`` (default float32): (GEMM FLOP/s on a (16384, 64) x (64, 64)
    layer, s per SiLU)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    dtype = dtype or torch.float32
    x = torch.randn(16384, 64, dtype=dtype)
    layer = torch.nn.Linear(64, 64, dtype=dtype)

    def median_time(fn) -> float:
        for _ in range(5):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    with torch.inference_mode():
        gemm = median_time(lambda: layer(x))
        y = x.clone()
        silu = median_time(lambda: F.silu(y, inplace=True))
    return 2 * 16384 * 64 * 64 / gemm, silu / y.numel()


def machine_rates_in_child(threads: int, dtype: str = "float32") -> tuple[float, float]:
    """`machine_rates` measured in a process of its own. Measured in this process, the
    benchmark's OpenMP workers would stay behind: under OMP_WAIT_POLICY=ACTIVE (set in `main`)
    libgomp's idle workers spin for good, so this process would hold a core busy for every case
    timed after it (seen: the parent at 68 % of a core, every case 3-5x slower)."""
    result = run_child([sys.executable, __file__, "--machine-rates", dtype, "--threads", str(threads)])
    return float(result["gemm"]), float(result["silu"])


def synchronizer(device: str) -> Callable[[], None]:
    """What brackets a timed call: ``torch.cuda.synchronize`` on CUDA (kernels run asynchronously,
    so the clock must wait for them), nothing on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def cuda_peak_growth_mib(base_bytes: int) -> float:
    """MiB by which CUDA's allocated-memory peak (since the last reset) exceeds ``base_bytes``."""
    import torch

    return max(0, torch.cuda.max_memory_allocated() - base_bytes) / 2**20


def current_rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def make_batch(case: Case, seed: int):
    """The case's GraphBatch (float32): uniform random clouds, random velocities, charges ±1."""
    import torch

    from fastegnn_md import FramePair, collate

    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(case.graphs):
        x = rng.uniform(0.0, case.box, size=(case.nodes, 3))
        pairs.append(FramePair(x, rng.normal(size=(case.nodes, 3)), x, rng.choice([-1.0, 1.0], (case.nodes, 1))))
    return collate(pairs, cutoff=case.cutoff, drop_rate=case.drop_rate, dtype=torch.float32)


def prepare_case(index: int, model_name: str, threads: int, tune: bool, device: str = "cpu"):
    """Process settings, the batch of ``CASES[index]`` and a seeded model (hidden 64, 4 layers,
    C = 3) on ``device``: (case, batch, model, sync, on_cuda), ``sync`` from `synchronizer`."""
    import torch

    from fastegnn_md.models import build_model
    from fastegnn_md.runtime import tune_allocator

    if tune:
        tune_allocator()
    torch.set_num_threads(threads)
    case = CASES[index]
    batch = make_batch(case, seed=index).to(device)
    torch.manual_seed(0)
    model = build_model(model_name, node_features=2, edge_features=2, hidden=64, layers=4, virtual_nodes=3)
    model.to(device)
    return case, batch, model, synchronizer(device), torch.device(device).type == "cuda"


def run_case(index: int, model_name: str, threads: int, repeats: int, tune: bool, device: str = "cpu") -> dict:
    import torch

    case, batch, model, sync, on_cuda = prepare_case(index, model_name, threads, tune, device)
    model.eval()
    base_kib = current_rss_kib()  # graph and model built, nothing run yet
    if on_cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
        base_bytes = torch.cuda.memory_allocated()
    with torch.inference_mode():
        for _ in range(3 if on_cuda else 1):  # CUDA: first calls load kernels and fill the allocator's cache
            model(batch)
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            model(batch)
            sync()
            times.append(time.perf_counter() - start)
    if on_cuda:
        peak_mib = cuda_peak_growth_mib(base_bytes)
        replay_ms = replay_ratio = None  # the replay is a CPU floor
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the replay's buffers
        peak_mib = max(0, peak_kib - base_kib) / 1024
        replay_ms, replay_ratio = replay_against_model(model, batch, repeats)
    return {
        "case": case.name,
        "model": model_name,
        "device": device,
        "edges_per_graph": batch.num_edges / case.graphs,
        "ms_per_graph": 1e3 * float(np.median(times)) / case.graphs,
        "peak_mib": peak_mib,
        "target_ms": case.target_ms,
        "replay_ms_per_graph": None if replay_ms is None else replay_ms / case.graphs,
        "replay_ratio": replay_ratio,
    }


def replay_against_model(model, batch, repeats: int) -> tuple[float, float]:
    """(median ms of the dense-op replay of one forward pass, median per-pair replay/model ratio).

    The replay (`dense_replay.py`) issues only the forward pass's matmul and SiLU calls, at the
    same shapes; its calls alternate with the model's so both see the same machine state.
    """
    import torch

    from dense_replay import record_dense_ops

    with torch.inference_mode():
        replay = record_dense_ops(lambda: model(batch))
        model_times, replay_times = alternate(lambda: model(batch), replay.run, repeats)
    return 1e3 * float(np.median(replay_times)), float(np.median(replay_times / model_times))


def alternate(first, second, repeats: int, sync: Callable[[], None] = lambda: None,
              warmup: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per call of two callables timed in alternation (`alternate_many`)."""
    first_times, second_times = alternate_many([first, second], repeats, sync, warmup)
    return first_times, second_times


def alternate_many(fns: list[Callable[[], None]], repeats: int, sync: Callable[[], None] = lambda: None,
                   warmup: int = 1) -> list[np.ndarray]:
    """Seconds per call of several callables timed in turn, after ``warmup`` calls each, so all
    see the same machine state: one array of ``repeats`` times per callable. ``sync`` brackets
    every timed call (`synchronizer`: waits for a GPU's queued work)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = np.empty((repeats, len(fns)))
    for i in range(repeats):
        for j, fn in enumerate(fns):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[i, j] = time.perf_counter() - start
    return [times[:, j] for j in range(len(fns))]


def saved_for_backward_mib(step_forward) -> float:
    """MiB of the distinct storages autograd saves for the backward pass of ``step_forward()``
    (which returns the loss); the graph is freed unused."""
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step_forward()
    del loss
    return sum(storages.values()) / 2**20


def counted_flops(loss_of_model) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of ``loss_of_model()`` and its backward, as torch's
    FlopCounterMode counts them (matmuls and their gradients; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    # With gradients on: inference mode trips the counter's module tracker, and the matmuls of a
    # forward pass are the same either way.
    with FlopCounterMode(display=False) as counter:
        loss = loss_of_model()
        forward = counter.get_total_flops()
        loss.backward()
        total = counter.get_total_flops()
    return float(forward), float(total)


def precision_cost(fast, batch, precision: str, device: str) -> dict:
    """What ``precision`` changes in the fast model's numbers against its full-precision run, same
    weights and graph: relative RMS difference of the predicted displacement (output − input
    positions) and of the loss gradient over all parameters (both 0 for "full")."""
    import torch
    from torch.nn import functional as F

    from fastegnn_md.models.precision import precision_context

    results = {}
    for label in ("full", precision):
        fast.zero_grad(set_to_none=True)
        with precision_context(label, device):
            positions = fast(batch).positions
        F.mse_loss(positions, batch.target_positions).backward()
        grads = torch.cat([p.grad.flatten() for p in fast.parameters() if p.grad is not None])
        results[label] = (positions.detach() - batch.positions, grads)
    fast.zero_grad(set_to_none=True)

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))

    (dx_full, g_full), (dx, g) = results["full"], results[precision]
    return {"displacement": relative(dx, dx_full), "gradient": relative(g, g_full)}


def run_reference_case(index: int, threads: int, repeats: int, tune: bool, device: str = "cpu",
                       precisions: tuple[str, ...] = ("full",), compile_fast: bool = False) -> dict:
    """The fast FastEGNN, in each of ``precisions`` (`fastegnn_md.models.precision`), against
    `fastegnn_md.models.reference` (always float32) on case ``index``: ms per graph of a forward
    pass and of a training step (forward + MSE on positions + backward), all calls in turn;
    autograd's saved MiB; peak RSS growth after each one's warm-up (on CUDA: each one's own peak
    of allocated CUDA memory over the graph and weights); what each precision changes in the
    displacement and gradient (`precision_cost`). With ``compile_fast`` each precision also gets a
    row for ``torch.compile(fast)`` (Inductor, static shapes), compiled during its warm-up calls,
    whose seconds are reported as ``compile_s``."""
    import torch
    from torch.nn import functional as F

    from fastegnn_md.models.precision import precision_context
    from fastegnn_md.models.reference import ReferenceModel

    case, batch, fast, sync, on_cuda = prepare_case(index, "fastegnn", threads, tune, device)
    reference = ReferenceModel(fast)  # reads fast's parameters: the same function, same weights
    # (label, model, precision); the reference last: on the CPU only the first peak is a model's own,
    # and the smaller footprints come first (bf16-mixed saves half the bytes).
    ordered = sorted(precisions, key=lambda p: p == "full")
    runs = [(p, fast, p) for p in ordered]
    if compile_fast:
        compiled = torch.compile(fast, dynamic=False)
        runs += [(f"{p}, torch.compile", compiled, p) for p in ordered]
    runs += [("reference", reference, "full")]

    def loss_of(model, precision: str):
        def loss():
            with precision_context(precision, device):
                positions = model(batch).positions
            return F.mse_loss(positions, batch.target_positions)
        return loss

    def forward_of(model, precision: str):
        def forward() -> None:
            with torch.inference_mode(), precision_context(precision, device):
                model(batch)
        return forward

    def train_step_of(model, precision: str):
        loss = loss_of(model, precision)

        def step() -> None:
            fast.zero_grad(set_to_none=True)
            loss().backward()
        return step

    base_kib = current_rss_kib()  # graph and model built, nothing run yet
    base_bytes = torch.cuda.memory_allocated() if on_cuda else 0
    peaks, warmup_s = {}, {}
    for label, model, precision in runs:
        if on_cuda:
            sync()
            fast.zero_grad(set_to_none=True)  # the previous model's gradients are not this one's memory
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        forward_of(model, precision)()
        train_step_of(model, precision)()
        sync()
        warmup_s[label] = time.perf_counter() - start
        if on_cuda:
            peaks[label] = cuda_peak_growth_mib(base_bytes)
        else:
            peaks[label] = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kib) / 1024
    warmup = 3 if on_cuda else 1
    forward = dict(zip([r[0] for r in runs], alternate_many([forward_of(m, p) for _, m, p in runs], repeats, sync,
                                                            warmup)))
    train = dict(zip([r[0] for r in runs], alternate_many([train_step_of(m, p) for _, m, p in runs], repeats, sync,
                                                          warmup)))
    per_graph = 1e3 / case.graphs
    ref_flops = counted_flops(loss_of(reference, "full"))
    ref_saved = saved_for_backward_mib(loss_of(reference, "full"))
    rows = {}
    for label, model, precision in runs[:-1]:
        rows[label] = {
            "forward_ms": {"fast": per_graph * float(np.median(forward[label])),
                           "reference": per_graph * float(np.median(forward["reference"]))},
            "forward_ratio": float(np.median(forward[label] / forward["reference"])),
            "train_ms": {"fast": per_graph * float(np.median(train[label])),
                         "reference": per_graph * float(np.median(train["reference"]))},
            "train_ratio": float(np.median(train[label] / train["reference"])),
            "flops": {"fast": counted_flops(loss_of(fast, precision)), "reference": ref_flops},
            "saved_mib": {"fast": saved_for_backward_mib(loss_of(fast, precision)), "reference": ref_saved},
            "peak_mib": {"fast": peaks[label], "reference": peaks["reference"]},
            "precision_cost": precision_cost(fast, batch, precision, device),
            "compile_s": warmup_s[label] if model is not fast else None,
        }
    return {"case": case.name, "device": device, "edges_per_graph": batch.num_edges / case.graphs, "precisions": rows}


def run_child(cmd: list[str]) -> dict:
    """Run one child of this script (a case, or the machine rates) in its own process and return its
    JSON line; if it fails, stop with the end of its stderr (a device run is often one shot, so the
    reason must be in the log)."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"speed.py: child process failed (exit {done.returncode}): {' '.join(cmd[2:])}\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main_against_reference(args: argparse.Namespace, cases: list[int]) -> None:
    """One subprocess per case (`run_reference_case`), then one table of fast / reference."""
    import torch

    on_cuda = torch.device(args.device).type == "cuda"
    print(f"machine: {machine(args.device)}; torch {torch.__version__}; {args.threads} threads; float32 data, "
          f"fast path in precision {' and '.join(args.precision)} (reference: float32); FastEGNN "
          f"hidden 64, 4 layers, C = 3; fast vs reference (same weights), calls alternating; "
          f"median of {args.repeats}; allocator tuned: {not args.no_tune}; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    if "bf16-mixed" in args.precision and not on_cuda:
        # Whether this CPU's bfloat16 matmuls are faster than its float32 ones at all.
        rates = {name: machine_rates_in_child(args.threads, name)[0] for name in ("float32", "bfloat16")}
        print("GEMM rate on a (16384, 64) x (64, 64) layer: " + ", ".join(
            f"{name} {rate / 1e9:.0f} GFLOP/s" for name, rate in rates.items()))
    print()
    peak_header = "peak CUDA MiB fast / ref" if on_cuda else "peak RSS MiB fast / after all"
    print("| case | precision | edges/graph | forward ms fast / ref | forward fast/ref | forward FLOPs fast/ref "
          "| train step ms fast / ref | train fast/ref | train FLOPs fast/ref "
          f"| autograd saved MiB fast / ref | {peak_header} | displacement / gradient change |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for index in [i for _ in range(args.rounds) for i in cases]:  # round after round over the cases
        cmd = [sys.executable, __file__, "--case", str(index), "--against-reference",
               "--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device,
               "--precision", *args.precision]
        if args.compile:
            cmd.append("--compile")
        if args.no_tune:
            cmd.append("--no-tune")
        result = run_child(cmd)
        for precision, r in result["precisions"].items():
            ratios.setdefault((result["case"], precision), []).append((r["forward_ratio"], r["train_ratio"]))
            f, t, m, p = r["forward_ms"], r["train_ms"], r["saved_mib"], r["peak_mib"]
            (fast_fwd, fast_all), (ref_fwd, ref_all) = r["flops"]["fast"], r["flops"]["reference"]
            d = 3 if on_cuda else 1  # GPU times are fractions of a millisecond: more digits there
            label = precision if r.get("compile_s") is None else f"{precision} ({r['compile_s']:.0f} s to compile)"
            print(f"| {result['case']} | {label} | {result['edges_per_graph']:,.0f} "
                  f"| {f['fast']:.{d}f} / {f['reference']:.{d}f} | {r['forward_ratio']:.2f} | {fast_fwd / ref_fwd:.2f} "
                  f"| {t['fast']:.{d}f} / {t['reference']:.{d}f} | {r['train_ratio']:.2f} | {fast_all / ref_all:.2f} "
                  f"| {m['fast']:.0f} / {m['reference']:.0f} | {p['fast']:.0f} / {p['reference']:.0f} "
                  f"| {r['precision_cost']['displacement']:.1e} / {r['precision_cost']['gradient']:.1e} |", flush=True)
    if args.rounds > 1:
        print()
        print(f"Over {args.rounds} rounds (each case in a fresh process per round): median [min, max] of the "
              "per-round ratios.")
        print()
        print("| case | precision | forward fast/ref | train step fast/ref |")
        print("|---|---|---:|---:|")
        for (case_name, precision), values in ratios.items():
            forward, train = np.array(values).T
            print(f"| {case_name} | {precision} | {np.median(forward):.2f} [{forward.min():.2f}, {forward.max():.2f}] "
                  f"| {np.median(train):.2f} [{train.min():.2f}, {train.max():.2f}] |")
    print()
    print("fast/ref: median over alternating pairs of calls of the fast model's time over the reference's "
          "(below 1: the fast path is faster). train step = forward + MSE on positions + backward, no optimizer. "
          "FLOPs fast/ref = the two models' matmul FLOPs as torch's FlopCounterMode counts them: a time ratio "
          "near it means the fast path spends its time on arithmetic the model needs. "
          "autograd saved = distinct storages saved for backward (exact). displacement / gradient change = "
          "relative RMS difference of the fast model's predicted displacement and loss gradient in this precision "
          "from its own full-precision run (0 in full precision). "
          + ("peak CUDA = growth of torch.cuda.max_memory_allocated over the graph and weights, reset before each "
             "model's warm-up (each model's own peak)." if on_cuda else
             "peak RSS = growth of the process's high-water mark after each one's warm-up, in the order "
             "bf16-mixed, full, " + ("the compiled ones (whose peak includes compiling), " if args.compile else "")
             + "reference (a maximum over those before it)."))


def machine(device: str = "cpu") -> str:
    """The CPU (and, for a CUDA ``device``, the GPU) the numbers come from."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"
    import torch

    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        text = f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}); host {text}"
    return text


def check_device(parser: argparse.ArgumentParser, name: str) -> None:
    """``--device`` must name a torch device that exists here (one line, exit 2, otherwise)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device: {name!r} is not a torch device (try cpu or cuda)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device: {name} requested but torch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device: {name}: only cpu and cuda are supported")


def main() -> None:
    # `import fastegnn_md` switches OpenMP to passive waiting when the 1-minute load average is
    # >= 0.5 (runtime.prefer_passive_waiting), and this benchmark's own previous case raises it:
    # without a fixed policy the later cases would run passive on a quiet machine (an 855-node
    # forward pass 78 instead of 54 ms). Set before anything imports fastegnn_md;
    # every case process inherits it.
    os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")
    from fastegnn_md.models.precision import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20, help="timed forward passes per case and run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs over all cases; the table gives each case's median over runs (the machine drifts)")
    parser.add_argument("--models", nargs="+", default=["fastegnn", "egnn"])
    parser.add_argument("--no-tune", action="store_true", help="leave glibc malloc settings alone")
    parser.add_argument("--cases", type=int, nargs="+", choices=range(len(CASES)), metavar="INDEX",
                        help=f"case indices to run (0-{len(CASES) - 1}, in CASES order; default all)")
    parser.add_argument("--against-reference", action="store_true",
                        help="time FastEGNN against the plain reference implementation (same weights): "
                             "forward and training step, ratio fast/reference per case")
    parser.add_argument("--device", default="cpu",
                        help="torch device to time on, e.g. cpu or cuda (default cpu); on CUDA calls are "
                             "synchronised and memory is CUDA memory")
    parser.add_argument("--precision", choices=PRECISIONS, nargs="+", default=["full"],
                        help="the fast path's precision(s) against the reference (always float32): full and/or "
                             "bf16-mixed (matmuls in bfloat16 under autocast; fastegnn_md.models.precision); "
                             "several are timed in turn in one process")
    parser.add_argument("--compile", action="store_true",
                        help="with --against-reference: also time torch.compile(fast model) in each precision "
                             "(Inductor, static shapes; compiled during the warm-up, its seconds reported)")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)  # internal: run one case
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--machine-rates", choices=("float32", "bfloat16"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    cases = list(range(len(CASES))) if args.cases is None else args.cases
    check_device(parser, args.device)
    if args.compile and not args.against_reference:
        parser.error("--compile times the compiled model against the reference: give --against-reference too")

    if args.machine_rates is not None:
        import torch

        gemm, silu = machine_rates(args.threads, dtype=getattr(torch, args.machine_rates))
        print(json.dumps({"gemm": gemm, "silu": silu}))
        return
    if args.case is not None:
        if args.against_reference:
            print(json.dumps(run_reference_case(args.case, args.threads, args.repeats, not args.no_tune, args.device,
                                                tuple(args.precision), args.compile)))
        else:
            print(json.dumps(run_case(args.case, args.model, args.threads, args.repeats, not args.no_tune,
                                      args.device)))
        return
    if args.against_reference:
        main_against_reference(args, cases)
        return

    import torch

    from fastegnn_md.runtime import tune_allocator

    tune_allocator()
    on_cuda = torch.device(args.device).type == "cuda"
    print(f"machine: {machine(args.device)}; torch {torch.__version__}; {args.threads} threads; float32; "
          f"hidden 64, 4 layers, C = 3; median of {args.repeats} per run; {args.rounds} run(s); "
          f"allocator tuned: {not args.no_tune}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    gemm_rates, silu_times = [], []
    results: dict[tuple[int, str], list[dict]] = {}  # (case index, model) -> one run_case result per run
    for round_index in range(args.rounds):
        # Rates and cases are measured again in every run, so a run's floor and times share the
        # machine's state; the table gives medians over runs. The floors are CPU figures.
        if not on_cuda:
            gemm_rate, silu_time = machine_rates_in_child(args.threads)
            gemm_rates.append(gemm_rate)
            silu_times.append(silu_time)
            print(f"run {round_index + 1}: GEMM {gemm_rate / 1e9:.0f} GFLOP/s on (16384,64)x(64,64), "
                  f"SiLU {silu_time * 1e9:.2f} ns per element", flush=True)
        for index in cases:
            for model_name in args.models:
                cmd = [sys.executable, __file__, "--case", str(index), "--model", model_name,
                       "--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device]
                if args.no_tune:
                    cmd.append("--no-tune")
                results.setdefault((index, model_name), []).append(run_child(cmd))
    gemm_rate = float(np.median(gemm_rates)) if gemm_rates else None
    silu_time = float(np.median(silu_times)) if silu_times else None
    per_run = args.rounds > 1
    print()
    print("| case | model | edges/graph | ms/graph" + (" (median of runs) | runs" if per_run else "")
          + " | goal (FastEGNN) | GEMM+SiLU floor ms | dense-op replay ms | replay / model | "
          + ("peak CUDA MiB |" if on_cuda else "peak MiB |"))
    print("|---|---|---:|---:|" + ("---|" if per_run else "") + "---:|---:|---:|---:|---:|")
    for (index, model_name), runs in results.items():
        r = runs[0]
        goal = f"≤ {r['target_ms']:g}" if model_name == "fastegnn" else ""

        def median(field: str) -> float:
            return float(np.median([run[field] for run in runs]))

        if on_cuda:  # the floors are CPU figures
            floor, replay, ratio = "n/a", "n/a", "n/a"
        else:
            flops, silu = work_counts(CASES[index], r["edges_per_graph"], model_name)
            floor = f"{1e3 * (flops / gemm_rate + silu * silu_time):.1f}"
            replay, ratio = f"{median('replay_ms_per_graph'):.1f}", f"{median('replay_ratio'):.2f}"
        # GPU times are fractions of a millisecond: two more digits there.
        ms = "{:.3f}" if on_cuda else "{:.1f}"
        runs_column = (" | " + " / ".join(ms.format(run["ms_per_graph"]) for run in runs)) if per_run else ""
        peak_mib = max(run["peak_mib"] for run in runs)
        print(f"| {r['case']} | {model_name} | {r['edges_per_graph']:,.0f} | {ms.format(median('ms_per_graph'))}"
              f"{runs_column} | {goal} | {floor} | {replay} | {ratio} | {peak_mib:.0f} |")
    print()
    if on_cuda:
        print("On CUDA: times bracketed by torch.cuda.synchronize(); peak CUDA MiB = growth of "
              "torch.cuda.max_memory_allocated over the graph and weights (reset per case). The floor and "
              "replay columns are CPU figures (measured CPU rates, a CPU replay) and are not computed here.")
        return
    print("floor = matmul FLOPs / measured GEMM rate + SiLU evaluations x measured time per SiLU (medians over runs): "
          "the time the arithmetic of this model takes at this machine's rates with zero overhead.")
    print("dense-op replay = the forward pass's own matmul and SiLU calls issued alone at the same shapes "
          "(benchmarks/dense_replay.py), alternating with the model in the same process: what those calls "
          "cost in eager PyTorch here, with every gather, scatter and other op removed.")


if __name__ == "__main__":
    main()
