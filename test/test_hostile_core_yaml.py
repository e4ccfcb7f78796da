"""Hostile YAML, written here: nested aliases ("billion laughs") in a model config, a train config
and a command-line override, recursive aliases, deep nesting and huge integers each give one short
ConfigError at load time; a config's legitimate anchors, aliases and merge keys still load
(issue 21, item 7: a 387-byte file ran 300 s and reached 7.65 GB, a 306-character override
printed a 140 MB error)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deltaworld_core.cli import one_line
from deltaworld_core.config import ConfigError, load_config, parse_override
from deltaworld_core.safe_yaml import MAX_EXPANDED_NODES, quote
from deltaworld_core.training.config import load_train_config

REPO = Path(__file__).resolve().parents[1]
# Every refusal is one line this short (the old code quoted the expanded value: megabytes).
SHORT = 300


def alias_chain(levels: int, width: int = 9) -> str:
    """A flow list whose last item stands for ``width ** levels`` integers, in ~45 bytes a level."""
    items = ["&a0 [" + ",".join(["1"] * width) + "]"]
    items += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def short_config_error(call) -> str:
    with pytest.raises(ConfigError) as err:
        call()
    text = str(err.value)
    assert "\n" not in text and len(text) < SHORT, f"{len(text):,} characters: {text[:200]}"
    return text


def test_nested_aliases_in_a_model_config_are_refused_at_load(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text("forecast:\n  output_size: " + alias_chain(6) + "\n")  # 266 bytes, 9^6 values
    text = short_config_error(lambda: load_config(path))
    assert "laughs.yaml" in text and f"more than {MAX_EXPANDED_NODES:,} values" in text


def test_nested_aliases_in_an_override_are_refused():
    override = "forecast.output_size=" + alias_chain(6)
    assert len(override) < 306
    text = short_config_error(lambda: load_config("default", dict([parse_override(override)])))
    assert text.startswith("override forecast.output_size: its aliases expand")


def test_nested_aliases_in_a_train_config_and_its_extends_are_refused(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("stage: tokenizer\nmodel:\n  forecast:\n    output_size: " + alias_chain(6) + "\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nsteps: 3\n")
    for path in (base, child):
        assert "base.yaml: its aliases expand" in short_config_error(lambda: load_train_config(path))


def test_the_cli_prints_one_short_line(capsys):
    from deltaworld_core import evaluate

    code = evaluate.main(["--synthetic", "0:1", "forecast.output_size=" + alias_chain(7)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and len(err) < SHORT, err[:200]
    assert "its aliases expand" in err


@pytest.mark.parametrize("value,fragment", [
    ("&a [*a]", "an alias refers to a node that contains it"),
    ("[" * 100_000 + "]" * 100_000, "nested more than 64 levels deep"),  # PyYAML's own recursion: 330
    ("[" * 70 + "1" + "]" * 70, "nested more than 64 levels deep"),
    ("9" * 5000, "a value cannot be read"),
    # merge keys doubled at each level: PyYAML copies the merged pairs while it builds the mapping
    ("[&m0 {k: 8}, " + ", ".join(f"&m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}" for i in range(1, 20)) + "]",
     "its aliases expand"),
], ids=["recursive", "deep", "deeper-than-64", "huge-int", "merge-keys"])
def test_other_hostile_values_are_refused_in_files_and_overrides(tmp_path, value, fragment):
    path = tmp_path / "hostile.yaml"
    path.write_text(f"forecast:\n  output_size: {value}\n")
    assert fragment in short_config_error(lambda: load_config(path))
    assert fragment in short_config_error(lambda: parse_override(f"forecast.output_size={value}"))


def test_the_issue_sized_bomb_fails_fast_in_a_bounded_process(tmp_path):
    """The 9-level file (395 bytes, 9^9 values) and a 306-character override, in a child process
    limited to 1 GB of address space and 30 s of CPU: the old reader died of either limit."""
    path = tmp_path / "laughs9.yaml"
    path.write_text("forecast:\n  output_size: " + alias_chain(9) + "\n")
    override = "forecast.output_size=" + alias_chain(7) + " " * (306 - len("forecast.output_size=" + alias_chain(7)))
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (30, 30))
        from deltaworld_core.config import ConfigError, load_config, parse_override
        for call in (lambda: load_config({str(path)!r}),
                     lambda: load_config("default", dict([parse_override({override!r})]))):
            try:
                call()
            except ConfigError as err:
                print(len(str(err)), str(err))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all(int(line.split()[0]) < SHORT for line in lines), out.stdout[:500]


def test_legitimate_anchors_aliases_and_merge_keys_still_load(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(textwrap.dedent("""\
        vfm:
          image_size: &size [224, 224]
        forecast:
          <<: &common {k: 4, horizon: 2}
          output_size: *size
        """))
    cfg = load_config(path)
    assert cfg.vfm.image_size == (224, 224) == cfg.forecast.output_size
    assert (cfg.forecast.k, cfg.forecast.horizon) == (4, 2)
    train = tmp_path / "train.yaml"
    train.write_text("stage: tokenizer\nsteps: &n 7\nlog_every: *n\n")
    assert load_train_config(train).log_every == 7
    for shipped in sorted((REPO / "deltaworld_core" / "configs").glob("train_*.yaml")):
        load_train_config(shipped)  # every shipped config still loads through the bounded reader


def test_error_messages_quote_long_values_briefly():
    text = short_config_error(lambda: load_config("default", {"forecast.quantize": "x" * 100_000}))
    assert text.startswith("forecast.quantize: 'xxx") and "..." in text
    text = short_config_error(lambda: load_config("default", {"heads.class_names": [["a"] * 1000] * 1000}))
    assert "heads.class_names" in text
    shared = [1] * 10
    for _ in range(40):  # 10^40 values if walked in full
        shared = [shared] * 10
    assert len(quote(shared)) <= 120
    assert quote("abc") == "'abc'" and quote((16384, 16384)) == "(16384, 16384)" and quote(float("nan")) == "nan"
    assert len(one_line(ValueError("x" * 10_000_000))) <= 2000
