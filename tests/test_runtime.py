"""Process settings for shared machines (`fastegnn_md.runtime`): OpenMP wait policy, thread count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fastegnn_md import runtime


def policy_after(code: str, env_policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    out = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


BUSY = "import os; os.getloadavg = lambda: (2.0, 2.0, 2.0); "
QUIET = "import os; os.getloadavg = lambda: (0.1, 0.1, 0.1); "


def test_importing_the_package_on_a_busy_machine_makes_openmp_wait_passively():
    assert policy_after(BUSY + "import fastegnn_md", None) == "PASSIVE"
    # Alone, spinning is faster: the default stays.
    assert policy_after(QUIET + "import fastegnn_md", None) == "None"
    # A policy the user chose stays; after torch has loaded OpenMP, setting it would be a lie.
    assert policy_after(BUSY + "import fastegnn_md", "ACTIVE") == "ACTIVE"
    assert policy_after(BUSY + "import torch, fastegnn_md", None) == "None"


def test_default_threads_leave_the_busy_cpus_to_the_work_running_on_them(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for load, expected in ((0.0, 2), (0.6, 1), (1.4, 1), (2.0, 1), (7.5, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert runtime.default_threads() == expected
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.2, 0.0, 0.0))
    assert runtime.default_threads() == 13


def test_cli_threads_default_to_the_free_cpus(monkeypatch):
    torch = pytest.importorskip("torch")
    from fastegnn_md.cli.common import set_torch_threads

    monkeypatch.setattr(runtime, "default_threads", lambda: 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        set_torch_threads(None)
        assert torch.get_num_threads() == 1
        set_torch_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
