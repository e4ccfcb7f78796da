"""The renderers of scripts/render_docs.py: one module per kind of result, each next to the
results it reads.

A table lives in a page between two markers::

    <!-- results:bench_cpu -->
    ...generated, never edited by hand...
    <!-- /results -->

``bench_cpu`` names a renderer in :data:`RENDERERS`: a function ``results_dir -> markdown``.

Modules (each registers the renderers of one kind of result):

- :mod:`.bench`: ``deltaworld_core.bench --json`` files (CPU and GPU ms per stage, notes, series)
- :mod:`.messages`: Futures message sizes and DDS delivery (bench_outputs, measure_futures_dds)
- :mod:`.device`: the GPU checks of scripts/device_check.sh (device_*.json, flops_*.json)
- :mod:`.node`: the node on a CPU (node_rate*.json) and camera input per QoS (input_qos.json)
- :mod:`.planner`: what each planner-facing output adds per forecast (planner_outputs*.json)
- :mod:`.loader`: the data reader's frames per second (loader_cpu.json)
- :mod:`.precision`: the VFM per precision and comparisons of two evaluations (eval_compare_*.json)
- :mod:`.quality`: held-out and synthetic evaluations, calibration, predictability
- :mod:`.teachers`: heads against the person teacher on held-out video (person_iou.json)
- :mod:`.depth_rgbd`: the depth head fine-tuned on a real RGB-D sequence (depth_rgbd.json)
- :mod:`.summary`: the targets table and the README's quality lines (over several results)
- :mod:`.code_tables`: tables read from code (config ranges, node parameters, module list)
- :mod:`.common`: formatting, provenance, finding result files; :mod:`.engine`: the markers

How to add a table:

1. Write the result with a script that records ``date`` and ``command`` in its JSON.
2. In the module of that kind of result (or a new module here, added to the import list below),
   write ``def render_mine(results: Path) -> str`` returning markdown, and register it with
   ``@renderer("mine")`` from :mod:`.registry`. Use :mod:`.common`'s ``load``, ``fmt``,
   ``table``, ``provenance`` and ``result_files`` (git-tracked files only: ``git add`` the JSON).
3. Put ``<!-- results:mine -->`` and ``<!-- /results -->`` in exactly one page (other pages link
   to it: test/test_docs.py fails when a table is rendered twice) and run
   ``.venv/bin/python scripts/render_docs.py``; ``--check`` must then pass.

Renderers must be deterministic (no clock, no machine lookups): everything they print comes from
the JSON files or the code. A renderer raises (KeyError, ValueError ...) rather than printing a
placeholder when its result is missing. Generic renderers pick up new files by themselves: every
``bench --json`` result becomes a row of the performance tables, every
``results/device_train*.json`` a row of the training-throughput table.
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent
if str(SCRIPTS) not in sys.path:  # bench_cpu_runs and compare_evals own the names renderers share
    sys.path.insert(0, str(SCRIPTS))

from . import (bench, code_tables, depth_rgbd, device, loader, messages, node, planner, precision, quality,  # noqa: E402,F401
               summary, teachers)
from .engine import MARKER, OPEN, pages, render_text, run  # noqa: E402,F401
from .registry import RENDERERS, renderer  # noqa: E402,F401
