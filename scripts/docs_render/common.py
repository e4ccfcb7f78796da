"""What every renderer shares: reading results, formatting numbers and tables, provenance lines,
and finding result files by pattern or by what they hold (git-tracked files only)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENTRY_SCRIPT = "render_docs.py"


def load(results: Path, name: str) -> dict:
    return json.loads((results / name).read_text())


def fmt(value, digits: int = 2) -> str:
    """A number as a table cell: fixed decimals, thousands separators, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def steps(values, digits: int = 2) -> str:
    """Per-horizon-step values as 'a / b / c'."""
    if values is None:
        return "-"
    return " / ".join(fmt(v, digits) for v in values)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)



def producers(results: Path, name: str) -> list[str]:
    """The scripts (scripts/*.sh, *.py beside results/) that name results/<name>: where a JSON
    records no command, they say what wrote it."""
    scripts = results.parent / "scripts"
    found = []
    for path in sorted([*scripts.glob("*.sh"), *scripts.glob("*.py")]):
        if path.name != ENTRY_SCRIPT and f"results/{name}" in path.read_text(errors="replace"):
            found.append(f"`scripts/{path.name}`")
    return found


# An interpreter named by its absolute path (``/home/me/repo/.venv/bin/python``): shown as the
# checkout-relative ``.venv/bin/python`` every page uses, whoever's disk the run was made on.
ABSOLUTE_VENV = re.compile(r"(?<![\w.])/\S*/(\.venv/bin/python3?)(?=\s|$)")


def shown_command(command: str) -> str:
    """A recorded command as the pages show it: the checkout's interpreter by its relative path."""
    return ABSOLUTE_VENV.sub(r"\1", command)


def provenance(data: dict, results: Path | None = None, name: str = "") -> str:
    """Date and command as the JSON records them; else the scripts that write the file."""
    date = data.get("date") or "date not in the JSON"
    command = data.get("command")
    if command:
        return f"{date}; `{shown_command(command)}`"
    written_by = producers(results, name) if results is not None and name else []
    if written_by:
        return f"{date}; written by {', '.join(written_by)}"
    return f"{date}; command not in the JSON"


def source(name: str) -> str:
    return f"`results/{name}`"


def tracked_paths(repo: Path) -> set[str] | None:
    """Paths git tracks in ``repo`` (None outside a git checkout): the module table lists committed
    code only, so a file someone has not committed yet never reaches a committed page."""
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(out.stdout.splitlines())


def result_files(results: Path, *patterns: str) -> list[Path]:
    """The results matching ``patterns``; in a git checkout only those git tracks, so a file someone
    has written but not committed yet never reaches a committed page (``git add`` a new result,
    then render)."""
    found = sorted({p for pattern in patterns for p in results.glob(pattern)})
    tracked = tracked_paths(results.parent)
    if tracked is None:
        return found
    return [p for p in found if p.relative_to(results.parent).as_posix() in tracked]


def json_or_none(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def bench_files(results: Path) -> list[Path]:
    """Every result written by ``deltaworld_core.bench --json`` (a ``stage_ms`` dict and a
    ``config`` with a name), whatever its file name: bench_*, device_bench_*, table_cpu_* ..."""
    found = []
    for path in result_files(results, "*.json"):
        d = json_or_none(path)
        if isinstance(d, dict) and isinstance(d.get("stage_ms"), dict) and isinstance(d.get("config"), dict) \
                and "name" in d["config"]:
            found.append(path)
    return found


def table_files(results: Path, key: str) -> list[Path]:
    """Results of scripts/bench_table.py-style runs: a ``table`` list whose rows have ``key``."""
    found = []
    for path in result_files(results, "*.json"):
        d = json_or_none(path)
        rows = d.get("table") if isinstance(d, dict) else None
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and key in rows[0]:
            found.append(path)
    return found


STAGES = ("vfm", "encode", "predict", "decode", "heads")



def machine(data: dict) -> str:
    m = data.get("machine", {})
    cores = m.get("cores")
    on_gpu = str(m.get("device", "cpu")).startswith("cuda")
    if on_gpu:  # the GPU's name, then the host CPU where the JSON records it (bench.py's machine.cpu)
        parts = [m.get("device_name") or "?", *([f"host CPU {m['cpu']}"] if m.get("cpu") else [])]
    else:
        parts = [m.get("cpu") or m.get("device_name") or "?"]
    if cores:
        parts.append(f"{cores} cores")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    if m.get("native_bf16") is not None and not str(m.get("device", "cpu")).startswith("cuda"):
        parts.append("native bf16" if m["native_bf16"] else "no native bf16")
    if m.get("load_avg_1min") is not None:
        parts.append(f"load average {fmt(m['load_avg_1min'], 1)}")
    return ", ".join(parts)


def config_label(data: dict) -> str:
    c = data.get("config", {})
    res = c.get("resolution") or ["?"]
    label = f"{c.get('name', '?')} ({c.get('vfm', '?')}, {res[0]} px, K={c.get('k', '?')}, {c.get('horizon', '?')} steps"
    extras = [f"{key} {c[key]}" for key in ("quantize", "vfm_precision", "precision", "cuda_precision", "cuda_graphs",
                                            "geometry", "publish_k") if c.get(key) not in (None, "", "none", False)]
    return label + (", " + ", ".join(extras) if extras else "") + ")"

