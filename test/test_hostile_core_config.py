"""Hostile and absurd configs, written here: a non-mapping YAML, undecodable bytes, tags that would
build Python objects, and every numeric key out of its documented range give one-line
ConfigErrors naming the key (issue 13, item 11)."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from deltaworld_core.config import (MAX_CONFIG_BYTES, MAX_MAP_PIXELS, ConfigError, ModelConfig, load_config,
                                    numeric_ranges, parse_override)

README = Path(__file__).resolve().parents[1] / "README.md"


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("text,fragment", [
    ("- vfm\n- forecast\n", "top level must be a mapping of sections (vfm:, tokenizer:, world:, heads:, forecast:, "
                            "weights:), got a list"),
    ("42\n", "got a int"),
    ("just a sentence\n", "got a str"),
    ("forecast: 3\n", "forecast: expected a mapping, got int"),
    ("forecast: [1, 2]\n", "forecast: expected a mapping, got list"),
    ("forecast:\n  k: [8\n", "invalid YAML"),
    ("forecast: !!python/object/apply:os.system ['touch RAN']\n", "invalid YAML"),
    ("forecast:\n  k: abc\n", "forecast.k: expected an integer, got 'abc'"),
    ("forecast:\n  max_gap_s: .inf\n", "forecast.max_gap_s must be in (0, 3600], got inf"),
    ("forecast:\n  step_s: .nan\n", "forecast.step_s must be in (0, 60], got nan"),
])
def test_hostile_yaml_files_give_one_line_config_errors(tmp_path, monkeypatch, text, fragment):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert fragment in one_line(err)
    assert not (tmp_path / "RAN").exists()


def test_undecodable_oversized_and_empty_files(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"forecast:\n  k: \xff\xfe\x00\n")
    with pytest.raises(ConfigError, match=r"binary\.yaml: not a UTF-8 text file") as err:
        load_config(binary)
    one_line(err)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=r"huge\.yaml: .* bytes is too large for a config") as err:
        load_config(huge)
    one_line(err)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).forecast.k == ModelConfig().forecast.k  # an empty file is all defaults


@pytest.mark.parametrize("override,fragment", [
    ({"forecast.output_size": [16384, 16384]}, "forecast.output_size must be in [1, 2048], got (16384, 16384)"),
    ({"forecast.k": 1000000}, "forecast.k must be in [1, 256], got 1000000"),
    ({"forecast.horizon": 10000}, "forecast.horizon must be in [1, 64], got 10000"),
    ({"forecast.max_gap_s": float("inf")}, "forecast.max_gap_s must be in (0, 3600], got inf"),
    ({"forecast.step_s": 0.0}, "forecast.step_s must be in (0, 60]"),
    ({"forecast.context": 0}, "forecast.context must be in [1, 64]"),
    ({"forecast.seed": -1}, "forecast.seed must be in [0, 9223372036854775807]"),
    ({"vfm.image_size": [4200, 4200]}, "vfm.image_size must be in [1, 2048]"),
    ({"vfm.depth": 1000}, "vfm.depth must be in [1, 96]"),
    ({"vfm.mlp_ratio": float("nan")}, "vfm.mlp_ratio must be in (0, 16], got nan"),
    ({"tokenizer.decoder_stride": 0}, "tokenizer.decoder_stride must be in [1, 16]"),
    ({"tokenizer.layerscale_init": 1e9}, "tokenizer.layerscale_init must be in [0, 1]"),
    ({"world.noise_std": float("-inf")}, "world.noise_std must be in (0, 10], got -inf"),
    ({"world.rope_max_hz": 1e12}, "world.rope_max_hz must be in (0, 10000]"),
    ({"heads.depth_bins": 100000}, "heads.depth_bins must be in [1, 1024]"),
    ({"heads.max_depth": float("inf")}, "heads.max_depth must be in (0, 10000], got inf"),
    ({"forecast.k": 256, "forecast.horizon": 64, "forecast.output_size": [512, 512]},
     f"exceeds {MAX_MAP_PIXELS:,}"),
])
def test_absurd_values_are_rejected_with_one_line(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("default", override)
    assert fragment in one_line(err)


def test_overrides_that_do_not_fit_the_tree():
    with pytest.raises(ConfigError, match="forecast is not a section"):
        load_config("default", {"forecast": 3, "forecast.k": 2})
    with pytest.raises(ConfigError, match="empty key part"):
        load_config("default", {"forecast..k": 2})
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config("default", dict([parse_override("forecast.k=abc")]))


def test_every_numeric_key_has_a_range_and_limits_are_inclusive():
    hints = typing.get_type_hints(ModelConfig)
    numeric = []
    for section, cls in hints.items():
        if not dataclasses.is_dataclass(cls):
            continue
        for f in dataclasses.fields(cls):
            kinds = {a for a in re.findall(r"\b(int|float)\b", str(typing.get_type_hints(cls)[f.name]))}
            if kinds:
                numeric.append(f"{section}.{f.name}")
    assert numeric and sorted(numeric) == sorted(numeric_ranges())
    # the ends of each range are accepted (a range is not an off-by-one trap)
    cfg = load_config("default", {"forecast.k": 256, "forecast.horizon": 1, "forecast.context": 64,
                                  "forecast.max_gap_s": 3600.0, "forecast.seed": 2**63 - 1,
                                  "tokenizer.layerscale_init": 0.0})
    assert cfg.forecast.k == 256 and cfg.forecast.max_gap_s == 3600.0
    cfg = load_config("default", {"forecast.k": 1, "forecast.horizon": 1, "forecast.output_size": [2048, 2048]})
    assert cfg.forecast.output_size == (2048, 2048)
    for name in ("default", "paper"):  # the shipped configs sit inside every range
        load_config(name)


def test_readme_documents_every_range():
    text = README.read_text()
    missing = [f"{key} {interval}" for key, interval in numeric_ranges().items()
               if not re.search(rf"`{re.escape(key)}`\s*\|\s*`?{re.escape(interval)}", text)]
    assert not missing, f"README's config range table lacks: {missing}"
