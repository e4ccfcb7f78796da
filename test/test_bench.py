"""The benchmark runs end to end and reports every key the README and issue name (no timing
targets here: those live in the benchmark's output, never in tests)."""

import json

from deltaworld_core import bench
from test_forecaster import DINOV2


def test_bench_reports_every_stage(tmp_path, capsys):
    out = tmp_path / "bench.json"
    overrides = [f"{k}={json.dumps(v)}" for k, v in DINOV2.items()]
    assert bench.main(["--steps", "3", "--json", str(out), *overrides]) == 0
    result = json.loads(out.read_text())
    for key in ("vfm", "encode", "predict", "decode", "heads", "total", "total_hz",
                "streaming_speedup", "peak_rss_mb", "flops", "utilisation", "config", "machine"):
        assert key in result, key
    assert result["total"] > 0 and result["total_hz"] > 0
    assert result["flops"]["decode"] > 0 and result["flops"]["total"] == sum(
        v for k, v in result["flops"].items() if k != "total")
    assert result["config"]["k"] == 4 and result["config"]["horizon"] == 2
    assert "streaming_speedup" in capsys.readouterr().out
