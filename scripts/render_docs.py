#!/usr/bin/env python3
"""Regenerates every table of measured numbers in README.md and docs/*.md from results/*.json.

``python scripts/render_docs.py`` rewrites every ``<!-- results:NAME -->`` block; ``--check``
rewrites nothing and exits 1 listing the blocks that no longer match their JSON (and unknown
renderer names), which ``test/test_docs.py`` runs in CI; ``--list`` names every renderer.

The renderers live in scripts/docs_render/, one module per kind of result; its docstring says how
to add a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from docs_render import MARKER, OPEN, RENDERERS, pages, render_text, run  # noqa: E402,F401 - the API tests use
from docs_render.bench import cpu_series, series_names  # noqa: E402,F401


def shrink_picture(src: Path, dst: Path, colours: int = 256) -> int:
    """Writes a forecast grid of the demo as a small palette PNG (the class colours kept exact,
    so the legend still matches); returns its size in bytes."""
    from PIL import Image

    from deltaworld_core.viz import palette

    image = Image.open(src).convert("RGB")
    fixed = palette(16)[:16].reshape(-1).tolist()
    adaptive = image.quantize(colors=colours - 16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    holder = Image.new("P", (1, 1))
    holder.putpalette(fixed + adaptive.getpalette()[: 3 * (colours - 16)])
    dst.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(palette=holder, dither=Image.Dither.NONE).save(dst, optimize=True)
    return dst.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any block is stale")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="folder of the JSON results")
    parser.add_argument("--repo", type=Path, default=REPO, help="repository root (README.md, docs/)")
    parser.add_argument("--list", action="store_true", help="list the renderers and exit")
    parser.add_argument("--picture", type=Path, metavar="FORECAST_PNG",
                        help="shrink one of the demo's forecast_NNNN.png into docs/img/forecast.png and exit")
    args = parser.parse_args(argv)
    if args.picture:
        size = shrink_picture(args.picture, args.repo / "docs" / "img" / "forecast.png")
        print(f"wrote docs/img/forecast.png ({size // 1024} KB)")
        return 0
    if args.list:
        for name, fn in sorted(RENDERERS.items()):
            print(f"{name}: {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    stale, problems = run(args.repo, args.results, args.check)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if args.check:
        for line in stale:
            print(f"stale: {line}", file=sys.stderr)
        if stale:
            print("run: .venv/bin/python scripts/render_docs.py", file=sys.stderr)
        return 1 if stale or problems else 0
    for line in stale:
        print(f"rewrote: {line.split(': block')[0]}: {line.split('block ')[1].split(' ')[0]}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
