"""The documentation cannot contradict itself: no work-log words in pages or code strings, no
measured number outside a generated block, each generated table in one page, every command a page
shows accepted by its tool. The rules are in test/doc_rules.py and test/doc_commands.py; each test
here also shows its rule failing on a planted line in a temporary copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import doc_commands
import doc_rules

REPO = doc_rules.REPO


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    """README.md and docs/ copied into a temporary repository root."""
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    return tmp_path


def _plant(page: Path, text: str) -> None:
    page.write_text(page.read_text() + "\n" + text + "\n")


def test_pages_hold_no_work_log_words():
    found = doc_rules.work_log_in_pages(doc_rules.doc_pages() + doc_rules.history_pages())
    assert not found, "work-log words in user pages:\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    "So the bound of issue 19 holds.", "No GPU was lent to the session that made these changes.",
    "Measured on this machine.", "Candidates tried in scratch runs.", "As of commit d7efbf1 the step was slower.",
    "The last run, before this issue's changes.", "An earlier run (`git show d7efbf1:results/x.json`)."])
def test_a_planted_work_log_line_fails(docs_copy, line):
    pages = doc_rules.doc_pages(docs_copy)
    assert doc_rules.work_log_in_pages(pages, docs_copy) == []
    _plant(docs_copy / "docs" / "gpu.md", line)
    assert doc_rules.work_log_in_pages(pages, docs_copy)


def test_code_strings_hold_no_work_log_words():
    """Docstrings, error messages and printed text of the library, the node and the scripts."""
    files = [f for f in doc_rules.code_files() if "__pycache__" not in f.parts]
    assert len(files) > 100, "too few code files found"
    found = doc_rules.work_log_in_code(files)
    assert not found, "work-log words in code strings:\n" + "\n".join(found)


def test_a_planted_work_log_string_fails(tmp_path):
    module = tmp_path / "deltaworld_core" / "sources.py"
    module.parent.mkdir()
    module.write_text('"""Named video sources."""\n\nNOTE = "two clips"  # issue 10 in a comment is no string\n')
    assert doc_rules.work_log_in_code([module], tmp_path) == []
    module.write_text(module.read_text() + 'HELP = "the two clips described in issue 10"\n')
    assert doc_rules.work_log_in_code([module], tmp_path) == ["deltaworld_core/sources.py:4: 'issue 10'"]


def test_prose_quotes_no_measured_number():
    """A measured number lives in a generated block (scripts/render_docs.py), never in prose."""
    found = doc_rules.numbers_in_prose(doc_rules.doc_pages())
    assert not found, "measured numbers outside generated blocks:\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    "The default reaches 11.3 forecasts/s at 1 thread.", "The step takes 82 ms.", "CDR decoding: 5.8 us.",
    "The mean is 0.999x copy-last.", "The loader is 6.6x faster than needed.", "Best of K: 1.034 / 1.104.",
    "Only 74 of 90 frames arrived.", "It was 4-5x cheaper."])
def test_a_planted_number_in_prose_fails(docs_copy, line):
    pages = doc_rules.doc_pages(docs_copy)
    assert doc_rules.numbers_in_prose(pages, docs_copy) == []
    _plant(docs_copy / "docs" / "performance.md", line)
    assert doc_rules.numbers_in_prose(pages, docs_copy)


def test_settings_and_code_stay_prose(docs_copy):
    _plant(docs_copy / "docs" / "performance.md",
           "K = 8 futures, 3 steps of 0.2 s, 224 px, frames over about 0.5 MB, Python 3.11, an 8x8 grid, "
           "`--bound 0.01`, `0.999x copy-last`.\n<!-- results:x -->\n11.3 forecasts/s\n<!-- /results -->")
    assert doc_rules.numbers_in_prose(doc_rules.doc_pages(docs_copy), docs_copy) == []


def test_each_table_is_rendered_once():
    """A generated table sits in one page; the others link to it."""
    twice = doc_rules.tables_rendered_twice(doc_rules.doc_pages())
    assert not twice, "tables rendered in several pages:\n" + "\n".join(twice)


def test_a_planted_second_copy_of_a_table_fails(docs_copy):
    pages = doc_rules.doc_pages(docs_copy)
    assert doc_rules.tables_rendered_twice(pages, docs_copy) == []
    _plant(docs_copy / "docs" / "gpu.md", "<!-- results:bench_cpu -->\n<!-- /results -->")
    assert doc_rules.tables_rendered_twice(pages, docs_copy) == ["bench_cpu: docs/gpu.md, docs/performance.md"]


def _help_texts(requests: list[list[str]]) -> list[str]:
    """``--help`` of each ``[target, args...]``, all in one child process."""
    done = subprocess.run([sys.executable, str(REPO / "test" / "doc_commands.py")], input=json.dumps(requests),
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _unknown_options(commands: list[doc_commands.Command]) -> list[str]:
    targets = sorted({c.target for c in commands})
    top = dict(zip(targets, _help_texts([[t, "--help"] for t in targets])))
    for target, text in top.items():
        assert "usage" in text.lower(), f"{target} --help printed no usage:\n{text[-1000:]}"
    subs = sorted({tuple(doc_commands.help_argv(c, top[c.target])) for c in commands} - {(t, "--help") for t in targets})
    helps = {(t, "--help"): text for t, text in top.items()}
    helps.update(zip(subs, _help_texts([list(s) for s in subs])))
    problems = []
    for c in commands:
        text = helps[tuple(doc_commands.help_argv(c, top[c.target]))]
        problems += [f"{c.where}: {c.target} has no option {o}" for o in c.options() if o not in text]
    return problems


def test_every_documented_command_uses_options_its_tool_lists():
    """Every project command in README.md and docs/ (fenced or inline) runs its tool's --help, and
    each --option it shows is one the tool (or its sub-command) lists."""
    commands = doc_commands.commands(doc_rules.doc_pages())
    assert len({c.target for c in commands}) >= 20, "the command extraction found too few tools"
    problems = _unknown_options(commands)
    assert not problems, "\n".join(problems)


def test_a_planted_broken_command_fails(tmp_path):
    page = tmp_path / "docs" / "p.md"
    page.parent.mkdir()
    page.write_text("```bash\npython -m deltaworld_core.released --out runs/mine --deltatok x.bin\n"
                    ".venv/bin/python -m deltaworld_core.released convert --deltatok x.bin --out runs/mine\n```\n")
    commands = doc_commands.commands([page], tmp_path)
    assert [(c.target, c.args[:1]) for c in commands] == [("deltaworld_core.released", ("--out",)),
                                                          ("deltaworld_core.released", ("convert",))]
    problems = _unknown_options(commands)
    assert problems == ["docs/p.md:1: deltaworld_core.released has no option --out",
                        "docs/p.md:1: deltaworld_core.released has no option --deltatok"]


GLOSSARY_TERMS = ("VFM", "copy-last", "spread-skill", "best of K", "mode", "two stages", "LARGE_DATA",
                  "AVX512-BF16", "AMX", "linear path", "PCA", "bom_k", "ECE", "MFU", "closed loop")


def undefined_terms(glossary: Path) -> list[str]:
    """The terms of GLOSSARY_TERMS no heading of the glossary defines."""
    headings = " | ".join(line.lower() for line in glossary.read_text().splitlines() if line.startswith("#"))
    return [term for term in GLOSSARY_TERMS if term.lower() not in headings]


def test_the_glossary_defines_the_jargon_and_the_readme_links_it():
    assert undefined_terms(REPO / "docs" / "glossary.md") == []
    assert "(docs/glossary.md)" in (REPO / "README.md").read_text()


def test_a_term_dropped_from_the_glossary_fails(docs_copy):
    glossary = docs_copy / "docs" / "glossary.md"
    glossary.write_text(glossary.read_text().replace("### ECE\n", "### Expected calibration error\n"))
    assert undefined_terms(glossary) == ["ECE"]
