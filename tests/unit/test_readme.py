"""The README cannot drift: every shell command in its code blocks is run here (the cheap ones) or registered with
the test or script that runs it (tests/readme_commands.py says how to register one)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import readme_commands as registry
from helpers import REPO

SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for every command in the shell code blocks of a Markdown text: fences may be
    indented (inside list items), continuation lines are joined, `$ ` prompts and trailing `# comments` dropped,
    spaces collapsed."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    shell = False
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if fence is None:
            match = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", line)
            if match:
                fence, shell = match.group(1), match.group(2).lower() in SHELL_LANGUAGES
            continue
        if line.startswith(fence):
            fence = None
            continue
        if not shell:
            continue
        line = re.sub(r"(^|\s)#(\s.*)?$", "", line).strip()  # a comment: whole line or after the command
        if line.startswith("$ "):
            line = line[2:]
        if not line and not pending:
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = " ".join((pending + line).split())
        pending = ""
        if command:
            out.append((start, command))
    return out


COMMANDS = readme_commands((REPO / "README.md").read_text(encoding="utf-8"))


def test_extraction_joins_continuations_and_drops_comments():
    text = ("x\n```bash\n# a comment\nllmlabel run a.yaml   # why\n  llmlabel run b \\\n      --set x=1\n```\n"
            "```python\nprint(1)\n```\n- item\n\n   ```sh\n   $ llmlabel models\n   ```\n")
    assert readme_commands(text) == [(4, "llmlabel run a.yaml"), (5, "llmlabel run b --set x=1"),
                                     (14, "llmlabel models")]


def test_every_readme_command_is_run_or_registered():
    registered = set(registry.RUN) | set(registry.ELSEWHERE) | set(registry.NOT_RUN)
    missing = [f"README.md line {n}: {cmd}" for n, cmd in COMMANDS if cmd not in registered]
    assert not missing, ("README commands not registered in tests/readme_commands.py (add each to RUN, ELSEWHERE "
                         "or NOT_RUN, exactly as shown):\n" + "\n".join(missing))
    stale = sorted(registered - {cmd for _, cmd in COMMANDS})
    assert not stale, "tests/readme_commands.py lists commands that README.md no longer has:\n" + "\n".join(stale)
    overlap = (set(registry.RUN) & set(registry.ELSEWHERE)) | (set(registry.RUN) & set(registry.NOT_RUN)) | (
        set(registry.ELSEWHERE) & set(registry.NOT_RUN))
    assert not overlap, f"registered twice: {sorted(overlap)}"


def test_commands_run_elsewhere_name_a_test_or_script_that_exists():
    problems = []
    for command, (where, _how) in registry.ELSEWHERE.items():
        path, _, test = where.partition("::")
        file = REPO / path
        if not file.is_file():
            problems.append(f"{command}: {path} does not exist")
        elif test and not re.search(rf"^def {re.escape(test)}\(", file.read_text(encoding="utf-8"), re.M):
            problems.append(f"{command}: {path} defines no test {test}")
    assert not problems, "\n".join(problems)


def test_the_cheap_readme_commands_run(tmp_path):
    """Each RUN command, in README order, exits 0 (with its registered arguments appended, e.g. --backend fake)."""
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    ran = []
    for number, command in COMMANDS:
        if command not in registry.RUN:
            continue
        argv = shlex.split(command)
        assert argv[0] == "llmlabel", f"README.md line {number}: RUN supports llmlabel commands only: {command}"
        cmd = [sys.executable, "-m", "llmlabel.cli", *argv[1:], *registry.RUN[command]]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"README.md line {number}: `{command}` exited {proc.returncode}:\n" \
                                     f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        ran.append(command)
    assert len(ran) == len(registry.RUN), "a RUN command is not in the README (see the registration test)"
    assert (tmp_path / "runs" / "mine" / "eval.json").is_file()
    assert (tmp_path / "runs" / "reviews" / "hf_dataset" / "README.md").is_file()


@pytest.mark.parametrize("command", sorted(registry.NOT_RUN))
def test_commands_not_run_say_why(command):
    assert len(registry.NOT_RUN[command]) > 20
