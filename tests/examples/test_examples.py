"""The example scripts run as a user would run them (small settings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_nbody_python_api_example(tmp_path: Path) -> None:
    script = ROOT / "examples" / "nbody_python_api.py"
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--systems", "8", "--particles", "12", "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "best validation MSE" in result.stdout
    assert (tmp_path / "run" / "best.pt").exists()
    assert "virtual nodes at" in result.stdout
