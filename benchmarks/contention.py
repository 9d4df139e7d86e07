"""What a training step costs on a machine shared with other CPU-bound processes (issue 17, item 6).

    python benchmarks/contention.py                      # 2 hogs, n-body and protein cases
    python benchmarks/contention.py --hogs 2 --steps 15 --cases 4 0

For each setting (torch threads 1 or 2; OpenMP's default wait policy, which spins at every
barrier, or OMP_WAIT_POLICY=PASSIVE, which sleeps) a fresh subprocess builds the case's graph
(the synthetic graphs of `speed.py`, same node and edge counts as the paper's data sets) and a
FastEGNN⟨3,0⟩ (hidden 64, 4 layers), then times training steps (forward, position MSE, backward,
Adam step) and forward passes (inference): first on the machine as it is ("quiet"), then with
``--hogs`` busy-loop processes started beside it. It prints the median times and their ratios. A process that gets
its fair share of 2 cores beside 2 hogs runs at 2/3 of a core per thread-demand, so the ratio
to expect is about 1.5 (1 thread) to 3 (2 threads); a policy whose ratio is far above that is
losing time to oversubscription, not to the hogs' share.

Run it when nothing else runs, or say what else ran: "quiet" is only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

SETTINGS = (  # (threads, OMP_WAIT_POLICY or None for OpenMP's default)
    (2, None),
    (2, "PASSIVE"),
    (1, None),
    (1, "PASSIVE"),
)


def worker(case_index: int, threads: int, steps: int) -> dict:
    """Median seconds per training step and per forward pass (inference) of one case, in this
    process (its env set by the parent)."""
    import torch  # first: so `import fastegnn_md` leaves OpenMP's policy as the parent set it

    sys.path.insert(0, str(HERE))
    from speed import prepare_case

    case, batch, model, _, _ = prepare_case(case_index, "fastegnn", threads, tune=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    target = batch.positions + 0.01

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = ((model(batch).positions - target) ** 2).mean()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    forward = []
    with torch.inference_mode():
        model(batch)
        for _ in range(steps):
            start = time.perf_counter()
            model(batch)
            forward.append(time.perf_counter() - start)
    return {"case": case.name, "median_s": float(np.median(times)), "forward_s": float(np.median(forward))}


def run_setting(case_index: int, threads: int, policy: str | None, steps: int) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    command = [sys.executable, __file__, "--worker", str(case_index), "--threads", str(threads), "--steps", str(steps)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_hogs(count: int) -> list[subprocess.Popen]:
    """``count`` single-threaded busy loops (what another CPU-bound job looks like to the scheduler)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=15, help="timed training steps per run (median reported)")
    parser.add_argument("--hogs", type=int, default=2, help="busy-loop processes beside the training run")
    parser.add_argument("--cases", type=int, nargs="+", default=[4, 0],
                        help="indices into speed.py's CASES (default: n-body 50 x 100, protein 855 nodes)")
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.threads, args.steps)))
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average before: {os.getloadavg()[0]:.2f}; {args.hogs} hogs; {args.steps} steps per run")
    print("| case | threads | OMP wait policy | step, quiet (ms) | step, with hogs (ms) | ratio "
          "| forward, quiet (ms) | forward, with hogs (ms) | ratio |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for case_index in args.cases:
        for threads, policy in SETTINGS:
            quiet = run_setting(case_index, threads, policy, args.steps)
            hogs = start_hogs(args.hogs)
            try:
                time.sleep(1.0)  # let the hogs take their cores
                shared = run_setting(case_index, threads, policy, args.steps)
            finally:
                for hog in hogs:
                    hog.kill()
                for hog in hogs:
                    hog.wait()
            print(f"| {quiet['case']} | {threads} | {policy or 'default (spin)'} | {1e3 * quiet['median_s']:.1f} | "
                  f"{1e3 * shared['median_s']:.1f} | {shared['median_s'] / quiet['median_s']:.2f} | "
                  f"{1e3 * quiet['forward_s']:.1f} | {1e3 * shared['forward_s']:.1f} | "
                  f"{shared['forward_s'] / quiet['forward_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
