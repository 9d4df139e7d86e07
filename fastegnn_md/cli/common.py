"""What every `fastegnn-md` command shares: one-line errors, argument types, devices, threads."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, Optional

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
    """``--threads`` for torch (None: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--device`` of the commands that run a model."""
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


def show_warnings_on_one_line() -> None:
    """fastegnn-md's own warnings (deprecated names) print as ``fastegnn-md: warning: <message>``."""
    from ..conventions import FastEGNNDeprecationWarning

    default = warnings.showwarning
    if getattr(default, "fastegnn_md", False):
        return  # already installed

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, FastEGNNDeprecationWarning):
            print(f"{PROG}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)

    show.fastegnn_md = True  # type: ignore[attr-defined]
    warnings.showwarning = show
