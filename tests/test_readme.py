"""The README's two commands are what CI runs and what the CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fastegnn_md.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert readme_commands()[1] in ci_lines


def test_every_install_path_pins_torch() -> None:
    setup = (ROOT / "setup.py").read_text()
    assert '"torch==2.13.0"' in setup
    for command in readme_commands():
        assert "pip install" in command
        assert "torch" not in command or "torch==2.13.0" in command


@pytest.mark.parametrize("index", [0, 1])
def test_readme_commands_parse(index: int) -> None:
    """Every `fastegnn-md ...` step of the first command is accepted by the CLI parser."""
    steps = [step.strip() for step in readme_commands()[index].split("&&")]
    cli_steps = [shlex.split(step)[1:] for step in steps if step.startswith("fastegnn-md ")]
    if index == 0:
        assert [s[0] for s in cli_steps] == ["rollout"]
    for argv in cli_steps:
        build_parser().parse_args(argv)
