"""The engine: finds the ``<!-- results:NAME -->`` blocks of README.md and docs/**/*.md and
replaces each block's body with what its renderer returns."""

from __future__ import annotations

import re
from pathlib import Path

from .registry import RENDERERS

MARKER = re.compile(r"<!-- results:([A-Za-z0-9_.-]+) -->\n(.*?)<!-- /results -->", re.S)
OPEN = re.compile(r"<!-- results:([A-Za-z0-9_.-]+) -->")


def pages(repo: Path) -> list[Path]:
    return [p for p in [repo / "README.md", *sorted((repo / "docs").glob("**/*.md"))] if p.is_file()]


def render_text(text: str, results: Path, where: str = "") -> tuple[str, list[str]]:
    """The text with every block rendered, and the problems found (unknown renderer, unclosed block)."""
    problems: list[str] = []
    opened = [m.group(1) for m in OPEN.finditer(text)]
    closed = [m.group(1) for m in MARKER.finditer(text)]
    if len(opened) != len(closed):
        problems.append(f"{where}: a `<!-- results:NAME -->` marker without its `<!-- /results -->`")

    def replace(match: re.Match) -> str:
        name = match.group(1)
        fn = RENDERERS.get(name)
        if fn is None:
            problems.append(f"{where}: unknown renderer {name!r} (known: {', '.join(sorted(RENDERERS))})")
            return match.group(0)
        try:
            body = fn(results).strip("\n")
        except (OSError, KeyError, ValueError, TypeError, IndexError, ZeroDivisionError) as error:
            problems.append(f"{where}: renderer {name!r} failed: {type(error).__name__}: {error}")
            return match.group(0)
        if not body.strip():  # no placeholder text in a page: commit the results or remove the block
            problems.append(f"{where}: renderer {name!r} found no results (commit them, or remove the block)")
            return match.group(0)
        return f"<!-- results:{name} -->\n{body}\n<!-- /results -->"

    return MARKER.sub(replace, text), problems


def run(repo: Path, results: Path, check: bool) -> tuple[list[str], list[str]]:
    """(stale blocks, problems); writes the pages unless ``check``."""
    stale: list[str] = []
    problems: list[str] = []
    for page in pages(repo):
        text = page.read_text()
        rel = page.relative_to(repo).as_posix()
        new, found = render_text(text, results, rel)
        problems += found
        if new != text:
            old_blocks = {m.start(): m.group(0) for m in MARKER.finditer(text)}
            new_blocks = list(MARKER.finditer(new))
            for (start, block), match in zip(sorted(old_blocks.items()), new_blocks):
                if block != match.group(0):
                    line = text.count("\n", 0, start) + 1
                    stale.append(f"{rel}:{line}: block {match.group(1)!r} does not match its results")
            if not check:
                page.write_text(new)
    return stale, problems

