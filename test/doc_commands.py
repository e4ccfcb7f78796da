"""The commands the documentation shows, and their ``--help``, for test/test_doc_rules.py.

A command is any ``python``/``.venv/bin/python`` (``nice``, ``torchrun`` and ``PY=...`` in front
allowed) call of ``-m deltaworld_core...``/``-m deltaworld_ros...`` or ``scripts/*.py`` in a fenced
code block or an inline code span of README.md or docs/. Each is checked against its own
``--help`` (its sub-command's, for ``released convert``, ``data.media to-bag`` ...): every
``--option`` it uses must be one the tool lists.

Run as a script, it reads a JSON list of ``[target, args...]`` on stdin (``target``: a module name
or a script path) and prints a JSON list of the help texts, all in one process (torch is imported
once).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OURS = re.compile(r"^(deltaworld_core|deltaworld_ros)(\.\w+)*$")
PYTHON = re.compile(r"(?:^|/)python3?$")
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


@dataclass(frozen=True)
class Command:
    where: str          # page:line
    target: str         # module name or scripts/NAME.py
    args: tuple[str, ...]

    def options(self) -> list[str]:
        """The ``--options`` it uses (before any ``--ros-args``), values stripped."""
        out = []
        for arg in self.args:
            if arg == "--ros-args":
                break
            if arg.startswith("--") and len(arg) > 2:
                out.append(arg.split("=", 1)[0])
        return out


def _tokens(text: str) -> list[str]:
    text = re.sub(r"\\\n", " ", text)
    text = re.sub(r"[\[\]|]", " ", text)  # [--resume], --video PATH | --bag ...
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


def parse(text: str, where: str) -> list[Command]:
    """The project commands in one shell text (a line, or an inline span)."""
    found = []
    for line in re.split(r"\n(?=\S)|;|&&", re.sub(r"\\\n", " ", text)):
        tokens = _tokens(line)
        if tokens and re.fullmatch(r"scripts/\w+\.py", tokens[0]):  # a script named without its interpreter
            found.append(Command(where, tokens[0], tuple(tokens[1:])))
            continue
        for i, token in enumerate(tokens):
            if not (PYTHON.search(token) or token in ("torchrun",)):
                continue
            rest = tokens[i + 1:]
            while rest and rest[0].startswith("-") and rest[0] != "-m":  # torchrun/python options
                rest = rest[2:] if rest[0] in ("--nproc_per_node", "--nnodes", "--node_rank", "--master_addr",
                                               "--master_port") else rest[1:]
            if rest[:2] == ["-m", "torch.distributed.run"]:
                rest = rest[2:]
                while rest and rest[0] != "-m":
                    rest = rest[1:]
            if len(rest) >= 2 and rest[0] == "-m" and OURS.match(rest[1]):
                found.append(Command(where, rest[1], tuple(rest[2:])))
            elif rest and re.fullmatch(r"scripts/\w+\.py", rest[0]):
                found.append(Command(where, rest[0], tuple(rest[1:])))
            break
    return found


def commands(pages: list[Path], repo: Path = REPO) -> list[Command]:
    """Every project command shown in the pages (fenced blocks and inline code)."""
    out = []
    for page in pages:
        text = page.read_text()
        rel = page.relative_to(repo).as_posix()
        for m in FENCE.finditer(text):
            out += parse(m.group(1), f"{rel}:{text.count(chr(10), 0, m.start()) + 1}")
        outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for m in INLINE.finditer(outside):
            out += parse(m.group(1), f"{rel}:{outside.count(chr(10), 0, m.start()) + 1}")
    return out


def help_argv(command: Command, top_help: str) -> list[str]:
    """``[target, (sub-command,) --help]``: a first word the tool lists as a choice is its sub-command."""
    first = next((a for a in command.args if not a.startswith("-")), None)
    choices = set(re.findall(r"\{([\w,-]+)\}", top_help))
    subcommands = {c for group in choices for c in group.split(",")}
    if first is not None and command.args and command.args[0] == first and first in subcommands:
        return [command.target, first, "--help"]
    return [command.target, "--help"]


def help_text(target: str, args: list[str]) -> str:
    """What ``target args`` prints (stdout and stderr), run in this process."""
    out = io.StringIO()
    saved, saved_exit = sys.argv, os._exit
    sys.argv = [target, *args]
    # A tool that leaves with os._exit (the node skips Python's slow teardown) would end this whole
    # process, every other tool's help with it: here it ends only its own run.
    os._exit = lambda status: sys.exit(status)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                if target.endswith(".py"):
                    runpy.run_path(str(REPO / target), run_name="__main__")
                else:
                    runpy.run_module(target, run_name="__main__", alter_sys=True)
            except SystemExit:
                pass
            except Exception as error:  # a tool that fails to start: its output says why, the others still run
                print(f"{target} failed to start: {type(error).__name__}: {error}")
    finally:
        sys.argv, os._exit = saved, saved_exit
    return out.getvalue()


if __name__ == "__main__":
    sys.path[:0] = [str(REPO), str(REPO / "scripts")]  # this checkout's code, whatever the venv installed
    requests = json.loads(sys.stdin.read())
    print(json.dumps([help_text(target, list(args)) for target, *args in requests]))
