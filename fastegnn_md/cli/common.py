"""What every `fastegnn-md` command shares: one-line errors, argument types, devices, threads."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, Optional

from ..models.precision import PRECISIONS

PROG = "fastegnn-md"


class UsageError(Exception):
    """A command-line mistake; printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage + error on two lines; users get the error line only."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog.replace(PROG, '').strip() or 'arguments'}: {message}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


# argparse names a type in "invalid <type> value: 'abc'": say what is expected, not the function.
positive_int.__name__ = "positive integer"
fraction.__name__ = "fraction (0 to 1)"
nonneg_float.__name__ = "non-negative number"


def torch_device(name: str) -> str:
    """``--device``: a torch device that exists here, as a string; UsageError otherwise."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device: {name!r} is not a torch device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device: {name} requested but torch sees no CUDA device")
    return str(device)


def set_torch_threads(threads: Optional[int]) -> None:
    """``--threads`` for torch (None: `runtime.default_threads`, the CPUs other work leaves free)."""
    import torch

    from ..runtime import default_threads

    torch.set_num_threads(threads or default_threads())


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--device`` of the commands that run a model."""
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: the CPUs that other running work leaves free, at least 1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--precision", choices=PRECISIONS, default="full",
                        help="full (default), or bf16-mixed: the model's matmuls in bfloat16, coordinates and sums "
                             "in float32; can be faster only where the CPU has AVX-512-BF16 or AMX, or on a recent "
                             "GPU, and not on every such CPU: time it (docs/architecture.md, 'Mixed precision')")


def route_warnings() -> None:
    """Warnings for a command-line user: fastegnn-md's own (`FastEGNNWarning`, deprecated names)
    print once each as ``fastegnn-md: warning: <message>``; warnings of the libraries underneath
    (MDAnalysis about PDB fields and placeholder unit cells, ...) stay off the screen, since the
    code that called them already deals with what they report; so do the "Exception ignored in
    __del__" tracebacks of library objects finalised after an error."""
    from ..errors import FastEGNNDeprecationWarning, FastEGNNWarning

    if getattr(warnings.showwarning, "fastegnn_md", False):
        return  # already installed
    shown: set[str] = set()

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if not issubclass(category, (FastEGNNWarning, FastEGNNDeprecationWarning)):
            return
        text = " ".join(str(message).split())
        if text not in shown:
            shown.add(text)
            print(f"{PROG}: warning: {text}", file=sys.stderr if file is None else file)

    show.fastegnn_md = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    previous = sys.unraisablehook

    def unraisable(report: Any) -> None:
        # A library object that fails again while being finalised after the error the user was
        # already told about (MDAnalysis' readers): not a second traceback on their screen.
        if getattr(report.object, "__qualname__", "").endswith("__del__"):
            return
        previous(report)

    sys.unraisablehook = unraisable
