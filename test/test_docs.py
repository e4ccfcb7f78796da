"""The documentation: result tables match the committed results/*.json, relative links resolve.

scripts/render_docs.py regenerates every table of measured numbers in README.md and docs/*.md; a
page whose table no longer matches its JSON fails here (fix: ``python scripts/render_docs.py``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_renderer():
    spec = importlib.util.spec_from_file_location("render_docs", REPO / "scripts" / "render_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_docs = _load_renderer()


def test_committed_pages_match_their_results():
    stale, problems = render_docs.run(REPO, REPO / "results", check=True)
    assert not problems, "\n".join(problems)
    assert not stale, "run `.venv/bin/python scripts/render_docs.py`:\n" + "\n".join(stale)


def test_every_results_json_parses_and_every_renderer_runs():
    """Every renderer runs on the committed results; one whose results are not committed yet (a
    generic renderer waiting for its first file) renders nothing and sits in no page."""
    for path in sorted((REPO / "results").glob("*.json")):
        json.loads(path.read_text())
    used = {name for page in render_docs.pages(REPO) for name in render_docs.OPEN.findall(page.read_text())}
    for name, fn in render_docs.RENDERERS.items():
        out = fn(REPO / "results")
        assert out.strip() or name not in used, name


def test_a_block_whose_renderer_finds_no_results_is_a_problem_not_a_placeholder(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "p.md").write_text("<!-- results:bench_gpu -->\nold\n<!-- /results -->\n")
    stale, problems = render_docs.run(tmp_path, tmp_path / "results", check=False)
    assert any("'bench_gpu' found no results" in p for p in problems)
    assert "old" in (tmp_path / "docs" / "p.md").read_text()  # nothing written in its place


def test_check_finds_a_stale_block_and_an_unknown_renderer(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.json").write_text(json.dumps({"v": 1}))
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "p.md"
    page.write_text("# p\n<!-- results:_test_x -->\nold\n<!-- /results -->\n<!-- results:nope -->\n<!-- /results -->\n")
    render_docs.RENDERERS["_test_x"] = lambda results: f"v = {json.loads((results / 'x.json').read_text())['v']}"
    try:
        stale, problems = render_docs.run(tmp_path, tmp_path / "results", check=True)
        assert [s.split(":")[0:2] for s in stale] == [["docs/p.md", "2"]]
        assert any("unknown renderer 'nope'" in p for p in problems)
        assert "old" in page.read_text()  # --check writes nothing
        render_docs.run(tmp_path, tmp_path / "results", check=False)
        assert "<!-- results:_test_x -->\nv = 1\n<!-- /results -->" in page.read_text()
        stale, _ = render_docs.run(tmp_path, tmp_path / "results", check=True)
        assert stale == []
        (tmp_path / "results" / "x.json").write_text(json.dumps({"v": 2}))  # a re-run changes the JSON
        stale, _ = render_docs.run(tmp_path, tmp_path / "results", check=True)
        assert len(stale) == 1
    finally:
        del render_docs.RENDERERS["_test_x"]


def test_generic_bench_renderer_picks_up_a_new_file(tmp_path):
    bench = json.loads((REPO / "results" / "bench_cpu.json").read_text())
    bench["date"], bench["command"] = "2099-01-01", "python -m deltaworld_core.bench --json new.json"
    (tmp_path / "bench_new.json").write_text(json.dumps(bench))
    out = render_docs.RENDERERS["bench_cpu"](tmp_path)
    assert "`bench_new.json`" in out and "2099-01-01" in out and "`python -m deltaworld_core.bench --json new.json`" in out


def test_bench_renderers_show_the_date_and_cpu_bench_records(tmp_path):
    """bench.py writes ``date`` and ``machine.cpu``: the CPU and GPU tables show both."""
    cpu = json.loads((REPO / "results" / "bench_cpu.json").read_text())
    cpu["date"], cpu["machine"]["cpu"] = "2099-01-02T03:04:05+00:00", "Test CPU 9000"
    gpu = json.loads((REPO / "results" / "device_bench_paper.json").read_text())
    gpu["date"], gpu["machine"]["cpu"] = "2099-01-03T00:00:00+00:00", "Host CPU 42"
    (tmp_path / "bench_x.json").write_text(json.dumps(cpu))
    (tmp_path / "device_bench_x.json").write_text(json.dumps(gpu))
    out = render_docs.RENDERERS["bench_cpu"](tmp_path)
    assert "2099-01-02T03:04:05+00:00" in out and "Test CPU 9000" in out
    out = render_docs.RENDERERS["bench_gpu"](tmp_path)
    assert "2099-01-03T00:00:00+00:00" in out and "Host CPU 42" in out
    assert gpu["machine"]["device_name"] in out  # the GPU's name stays
    notes = render_docs.RENDERERS["bench_notes"](tmp_path)
    assert "2099-01-02T03:04:05+00:00" in notes and "Test CPU 9000" in notes


def test_pages_carry_their_tables_as_blocks():
    """Each table of measured numbers is a generated block in the page of its subject (and only
    there: test_doc_rules.py); the other pages link to it."""
    wanted = {"gpu.md": {"flops_table", "outputs", "futures_sizes", "futures_dds"},
              "performance.md": {"bench_cpu", "bench_notes", "bench_gpu", "node_rate", "device_tests"},
              "vfm-precision.md": {"vfm_precision", "vfm_precision_eval"},
              "model-card.md": {"eval_real", "eval_compare_quantize", "targets"}}
    for page, names in wanted.items():
        text = (REPO / "docs" / page).read_text()
        assert names <= set(render_docs.OPEN.findall(text)), page


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def _doc_pages():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]


@pytest.mark.parametrize("page", _doc_pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold commands, not links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text()):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_readme_stays_short_and_keeps_the_quick_start():
    readme = (REPO / "README.md").read_text()
    assert readme.count("\n") <= 260
    assert "./setup.sh && .venv/bin/python -m deltaworld_ros.demo --out out/demo" in readme
    assert "./setup.sh && .venv/bin/python -m pytest -q" in readme
    assert not re.search(r"\d+ (passed|skipped|failed)", readme), "test counts go stale: the README names none"
    ci = (REPO / ".ci" / "run").read_text()
    assert "./setup.sh && .venv/bin/python -m pytest -q" in ci


def test_committed_picture_is_small():
    for picture in (REPO / "docs" / "img").glob("*.png"):
        assert picture.stat().st_size < 200 * 1024, picture.name


def diagnostics_keys(package: Path) -> set[str]:
    """The keys of the node's /diagnostics values, read with ast from the function that builds them
    (``Diagnostics.values`` or the node's ``_publish_diagnostics``, wherever the package has it)."""
    keys: set[str] = set()
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in ("values", "_publish_diagnostics"):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Dict):
                        keys |= {k.value for k in inner.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                    elif isinstance(inner, ast.Subscript) and isinstance(inner.value, ast.Name) \
                            and inner.value.id == "values" and isinstance(inner.slice, ast.Constant):
                        keys.add(inner.slice.value)
    return {k for k in keys if re.fullmatch(r"[a-z_]+", k)}


def test_ros_interface_names_every_diagnostics_key_and_launch_argument():
    """The hand-written tables of docs/ros-interface.md keep up with the node and the launch file."""
    page = (REPO / "docs" / "ros-interface.md").read_text()
    keys = diagnostics_keys(REPO / "deltaworld_ros")
    assert len(keys) >= 10, f"too few diagnostics keys found in deltaworld_ros: {sorted(keys)}"
    missing = sorted(k for k in keys if f"`{k}`" not in page)
    assert not missing, f"docs/ros-interface.md lacks diagnostics keys: {missing}"
    launch = (REPO / "launch" / "forecast.launch.py").read_text()
    arguments = re.findall(r'DeclareLaunchArgument\(\s*"([a-z_]+)"', launch)
    assert arguments
    missing = sorted(a for a in arguments if f"`{a}`" not in page)
    assert not missing, f"docs/ros-interface.md lacks launch arguments: {missing}"


def test_diagnostics_keys_are_found_in_either_layout(tmp_path):
    (tmp_path / "node.py").write_text(
        "class Node:\n    def _publish_diagnostics(self):\n        values = {'frames_received': '1'}\n"
        "        values['model_errors'] = '0'\n")
    (tmp_path / "diag.py").write_text(
        "class Diagnostics:\n    def values(self, s):\n        return {'latency_ms_median': '2', 'Not a key': 1}\n")
    assert diagnostics_keys(tmp_path) == {"frames_received", "model_errors", "latency_ms_median"}


def test_cpu_series_of_other_machines_are_found_by_the_names_bench_cpu_runs_writes(tmp_path):
    """scripts/bench_cpu_runs.py --name X writes bench_cpu_X[_Nthreads].json; the targets table and
    the README take each machine's series by those names (a single run beside them is no series)."""
    spec = importlib.util.spec_from_file_location("bench_cpu_runs", REPO / "scripts" / "bench_cpu_runs.py")
    runs_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runs_script)
    results = tmp_path / "results"
    results.mkdir()
    for name, threads, series in (("", 1, True), ("", 2, True), ("avx2", 1, True), ("avx2", 2, True),
                                  ("avx2_quantize_bf16", 1, False)):
        d = {"config": {"name": "default", "threads": threads}, "stage_ms": {"total": 100.0 * threads},
             "machine": {"cpu": name or "reference"}}
        if series:
            d["runs"] = [{"throughput_hz": 10.0}]
        file = runs_script.out_name(threads, name) if series else f"bench_cpu_{name}.json"
        (results / file).write_text(json.dumps(d))
    assert runs_script.out_name(2, "avx2") == "bench_cpu_avx2_2threads.json"
    assert render_docs.series_names(results) == ["", "avx2"]
    assert render_docs.cpu_series(results, 2, "avx2")["machine"]["cpu"] == "avx2"
    assert render_docs.cpu_series(results, 1)["machine"]["cpu"] == "reference"
    assert render_docs.cpu_series(results, 4) is None


ABSOLUTE_INTERPRETER = re.compile(r"(?<![\w.])/\S*/\.venv/bin/python")


def test_pages_show_the_checkout_relative_interpreter():
    """A command recorded with an absolute interpreter path (the disk it ran on) is shown as
    ``.venv/bin/python``: no page names anyone's directories."""
    from docs_render.common import shown_command

    assert shown_command("/home/me/repo/.venv/bin/python scripts/a.py --out /tmp/x") == (
        ".venv/bin/python scripts/a.py --out /tmp/x")
    assert shown_command(".venv/bin/python -m deltaworld_core.bench") == ".venv/bin/python -m deltaworld_core.bench"
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in pages for m in ABSOLUTE_INTERPRETER.finditer(p.read_text())]
    assert not found, "\n".join(found)
