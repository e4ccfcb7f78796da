"""Rules that keep the documentation from contradicting itself, used by test/test_doc_rules.py.

- **Work-log words**: user pages (README.md, docs/, CHANGELOG.md) and the strings and docstrings of the
  code (deltaworld_core/, deltaworld_ros/, scripts/) describe the product, never how it was made:
  no "issue NN", "session", "this machine", "scratch runs", "this issue", "before this change",
  no commit hashes.
- **Numbers in prose**: a measured number appears only inside a generated block
  (``<!-- results:NAME -->`` ... ``<!-- /results -->``, written by scripts/render_docs.py from
  results/*.json). Outside those blocks, code and inline code, prose may not hold:
  a rate or a time (``12.2 forecasts/s``, ``82 ms``, ``5.8 us``, ``16.6 pairs/s``), a ratio to
  copy-last, a speed-up or slow-down factor (``3.5x``, ``4-5x``), a count of outcomes
  (``74 of 90``), or a number with two or more decimals (``1.034``, ``0.58``). Settings,
  sizes and design constants (``0.2 s`` steps, ``224 px``, ``K = 8``, ``0.5 MB``) stay prose.
- **Each table once**: a renderer's block appears in one page only; other pages link to it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORK_LOG = re.compile(
    r"\bissues? #?\d+"                                  # issue 21, issues 10, 11, issue #7
    r"|\bthis issue\b|\bthe issue's\b"
    r"|\bsession\b(?!\.\w)"                             # session (not a key such as session.intra_op...)
    r"|\bthis machine\b|\bscratch (?:runs?|profiles?)\b"
    r"|\bbefore this (?:change|issue)\b|\bas of commit\b"
    r"|\b(?:commit|git show) [0-9a-f]{7,40}\b",
    re.I)
# "session" in the ONNX Runtime sense is the library's own term, not a work log
ONNX_SESSION = re.compile(r"(?:ONNX Runtime|onnxruntime|InferenceSession)[^.]{0,80}$", re.I)
# a bare hexadecimal word of commit length with letters and digits, in pages only (code holds checksums)
COMMIT_HASH = re.compile(r"(?<![\w./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w/-])")

MEASURED = re.compile(
    r"\d[\d,]*(?:\.\d+)?(?:\s*-\s*\d[\d,]*(?:\.\d+)?)?\s*"
    r"(?:forecasts/s|forecasts a second|samples/s|pairs/s|steps/s|frames/s|clips/s|frames per second"
    r"|[GT]FLOP/s|ms\b|us\b|x copy-last)"
    r"|(?<![\w.])\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?x(?![\w])"   # 3.5x, 4-5x (not 8x8, not 0x1f)
    r"|\b\d+ of \d+\b"                                         # 74 of 90
    r"|(?<![\w.])\d+\.\d{2,}\b(?!\.\d)",                      # 1.034, 0.58 (not a version 2.13.0)
    re.I)
VERSION = re.compile(r"(?:Python|torch|CUDA|Debian|Ubuntu|ROS 2|OpenCV|numpy)\s*$", re.I)

BLOCK = re.compile(r"<!-- results:([A-Za-z0-9_.-]+) -->\n.*?<!-- /results -->", re.S)
OPEN = re.compile(r"<!-- results:([A-Za-z0-9_.-]+) -->")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
COMMENT = re.compile(r"<!--.*?-->", re.S)


def doc_pages(repo: Path = REPO) -> list[Path]:
    """The user pages: README.md and every page under docs/."""
    return [repo / "README.md", *sorted((repo / "docs").glob("**/*.md"))]


def history_pages(repo: Path = REPO) -> list[Path]:
    """Pages of history (CHANGELOG.md): their numbers are as measured then, but no work-log words."""
    return [repo / "CHANGELOG.md"]


def code_files(repo: Path = REPO) -> list[Path]:
    """The Python files whose strings users read (library, node, scripts)."""
    return [p for package in ("deltaworld_core", "deltaworld_ros", "scripts")
            for p in sorted((repo / package).rglob("*.py"))]


def _blank(match: re.Match) -> str:
    """Keeps line numbers: a removed span becomes its newlines."""
    return "\n" * match.group(0).count("\n")


def prose(markdown: str) -> str:
    """The markdown without generated blocks, fenced code, inline code, link targets and comments."""
    for pattern in (BLOCK, FENCE, COMMENT, INLINE_CODE, LINK_TARGET):
        markdown = pattern.sub(_blank, markdown)
    return markdown


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def work_log_in_text(text: str, where: str, hashes: bool) -> list[str]:
    found = []
    for m in WORK_LOG.finditer(text):
        if m.group(0).lower() == "session" and ONNX_SESSION.search(text[max(0, m.start() - 120):m.start()]):
            continue
        found.append(f"{where}:{_line(text, m.start())}: {m.group(0)!r}")
    if hashes:
        found += [f"{where}:{_line(text, m.start())}: commit hash {m.group(0)!r}" for m in COMMIT_HASH.finditer(text)]
    return found


def work_log_in_pages(pages: list[Path], repo: Path = REPO) -> list[str]:
    """Work-log words anywhere in the pages (generated blocks included: their JSON notes are text too)."""
    found = []
    for page in pages:
        text = page.read_text()
        found += work_log_in_text(COMMENT.sub(_blank, text), page.relative_to(repo).as_posix(), hashes=True)
    return found


def strings_of(source: str) -> list[tuple[int, str]]:
    """Every string literal and docstring of a module, with its line (f-strings' literal parts too)."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def work_log_in_code(files: list[Path], repo: Path = REPO) -> list[str]:
    found = []
    for path in files:
        rel = path.relative_to(repo).as_posix()
        for lineno, value in strings_of(path.read_text()):
            found += [f"{rel}:{lineno}: {hit.split(': ', 1)[1]}"
                      for hit in work_log_in_text(value, rel, hashes=False)]
    return found


def numbers_in_prose(pages: list[Path], repo: Path = REPO) -> list[str]:
    """Measured-looking numbers outside generated blocks, code and link targets."""
    found = []
    for page in pages:
        text = prose(page.read_text())
        for m in MEASURED.finditer(text):
            if VERSION.search(text[max(0, m.start() - 12):m.start()]):
                continue
            found.append(f"{page.relative_to(repo).as_posix()}:{_line(text, m.start())}: {m.group(0)!r}")
    return found


def tables_rendered_twice(pages: list[Path], repo: Path = REPO) -> list[str]:
    """Renderer names whose block appears more than once across the pages."""
    seen: dict[str, list[str]] = {}
    for page in pages:
        for name in OPEN.findall(page.read_text()):
            seen.setdefault(name, []).append(page.relative_to(repo).as_posix())
    return [f"{name}: {', '.join(where)}" for name, where in sorted(seen.items()) if len(where) > 1]
