"""The README's Quick start is what CI runs: the two commands must be the same text in both places."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _ci_command(name: str) -> str:
    script = (ROOT / ".ci" / "run").read_text()
    match = re.search(rf"^{name}=(.*)$", script, re.MULTILINE)
    assert match, f"{name} not found in .ci/run"
    # The assignment is shell-quoted; let shlex undo the quoting.
    (value,) = shlex.split(match.group(1))
    return value


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.DOTALL)


def test_readme_quick_start_is_two_commands_that_ci_runs() -> None:
    commands = _quick_start_commands()
    assert commands == [_ci_command("QUICKSTART_COMMAND"), _ci_command("TEST_COMMAND")]
    assert all("\n" not in command for command in commands)
