"""`python -m deltaworld_core.calibrate`: the closed-form fit, the config it writes, and that
`evaluate` with the written values measures what the fit promised. Tiny random models, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deltaworld_core import calibrate
from deltaworld_core import evaluate as ev
from deltaworld_core.config import load_config
from deltaworld_core.data.sources import ResolvedClip

from test_evaluate import write_video

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


def stats(a, b, c, v, clips=10):
    return {"A": np.asarray(a, float), "B": np.asarray(b, float), "C": np.asarray(c, float),
            "V": np.asarray(v, float), "clips": clips}


def test_fit_is_the_minimum_of_the_video_averaged_ratio():
    data = {"x": stats([4.0, 2.0], [1.0, 0.5], [2.0, 1.0], [1.0, 1.0]),
            "y": stats([1.0, 1.0], [0.6, 0.2], [3.0, 3.0], [2.0, 2.0])}
    out = calibrate.fit(data, k=8)
    scale = out["mean_scale"]

    def avg_ratio(s):
        return np.mean([(s * s * d["A"] - 2 * s * d["B"] + d["C"]) / d["C"] for d in data.values()])

    assert avg_ratio(scale) < avg_ratio(scale - 1e-3) and avg_ratio(scale) < avg_ratio(scale + 1e-3)
    assert out["video_average"]["mean_ratio_to_copy_last"]["calibrated"] == pytest.approx(
        np.mean([(scale ** 2 * d["A"] - 2 * scale * d["B"] + d["C"]) / d["C"] for d in data.values()], axis=0).tolist())
    ssr = np.concatenate([out["videos"][n]["spread_skill_ratio"]["calibrated"] for n in data])
    assert np.exp(np.log(ssr).mean()) == pytest.approx(1.0)  # geometric mean 1 over videos and steps
    assert out["videos"]["x"]["own_mean_scale"] == pytest.approx(1.5 / 6.0)
    # copy-last error [2, 1] per step: RMS shrinks with the gap, growth log(sqrt(1/2)) / log(2) = -0.5 -> 0
    assert calibrate.change_growth(np.array([2.0, 1.0])) == pytest.approx(-0.5)
    assert calibrate.change_growth(np.array([1.0, 4.0, 9.0])) == pytest.approx(1.0)  # RMS ~ gap
    assert out["change_growth"] == pytest.approx(0.0)
    assert calibrate.change_growth(np.array([1.0])) is None


def test_fit_never_reverses_the_prediction_and_skips_still_videos():
    data = {"anti": stats([1.0], [-0.5], [1.0], [1.0]), "still": stats([1.0], [0.0], [0.0], [1.0])}
    out = calibrate.fit(data, k=4)
    assert out["mean_scale"] == 0.0  # anti-correlated: persistence, not the negated forecast
    assert out["skipped"] == ["still"]
    with pytest.raises(calibrate.CalibrationError, match="nothing to fit"):
        calibrate.fit({"still": data["still"]}, k=4)


def test_write_config_keeps_comments_and_other_keys(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("vfm:\n  family: dinov2\n  # spread: 9 (another section's comment)\nforecast:\n  k: 8\n"
                    "  spread: 1.7   # why\n  quantize: bf16\nheads: {}\n")
    calibrate.write_config(path, 0.123, 0.9)
    text = path.read_text()
    assert "  # spread: 9 (another section's comment)" in text and "  spread: 0.90              # fitted by python -m deltaworld_core.calibrate" in text
    assert "  mean_scale: 0.12" in text and text.index("mean_scale") < text.index("heads:")
    cfg = load_config(path)
    assert cfg.forecast.spread == pytest.approx(0.9) and cfg.forecast.mean_scale == pytest.approx(0.12)
    calibrate.write_config(path, 0.5, 1.0, 0.3)  # a second fit replaces, never duplicates
    assert load_config(path).forecast.change_growth == pytest.approx(0.3)
    flow = tmp_path / "flow.yaml"
    flow.write_text("vfm: {family: dinov2}\nforecast: {k: 4, spread: 2.0}  # one line\n")
    calibrate.write_config(flow, 0.25, 1.5)
    assert load_config(flow).forecast.k == 4 and load_config(flow).forecast.mean_scale == 0.25
    assert path.read_text().count("mean_scale") == 1 and load_config(path).forecast.mean_scale == 0.5
    with pytest.raises(calibrate.CalibrationError, match="no top-level 'forecast:'"):
        (tmp_path / "bare.yaml").write_text("vfm: {}\n")
        calibrate.write_config(tmp_path / "bare.yaml", 0.5, 1.0)


@pytest.fixture()
def moving_video(tmp_path, monkeypatch):
    """A textured square moving across noise, offered as the calibration split's only clip."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(30):
        img = (rng.random((48, 64, 3)) * 60).astype(np.uint8)
        x = 4 + i
        img[10:30, x:x + 16] = 220
        frames.append(img)
    path = write_video(tmp_path / "clip.avi", frames, fps=10.0)
    clip = ResolvedClip("fake", "clip", path, None)
    from deltaworld_core.evaluation import cli as evaluate_cli

    for module in (calibrate, evaluate_cli):  # the two tools that resolve source names
        monkeypatch.setattr(module, "resolve_clips", lambda names, cache=None: [clip])
    return path


def test_calibrated_evaluation_measures_what_the_fit_promised(tmp_path, moving_video, capsys):
    """The shipped default (hypotheses that really differ) fitted on one clip, the values written
    into a copy of its config, then `evaluate` on the same clips: the mean's error and the
    spread-skill ratio are exactly what the fit's sums predict at the written values."""
    cfg_path = tmp_path / "default.yaml"
    cfg_path.write_text((REPO / "deltaworld_core" / "configs" / "default.yaml").read_text())
    common = ["--config", str(cfg_path), "--weights", str(REPO / "deltaworld_core" / "weights" / "default"),
              "--no-cache", "--horizon", "2", "--k", "4"]
    out = tmp_path / "calibration.json"
    assert calibrate.main([*common, "--json", str(out), "--write", "forecast.quantize=none"]) == 0
    fit = json.loads(out.read_text())
    assert "mean_scale" in capsys.readouterr().out
    cfg = load_config(cfg_path)
    assert cfg.forecast.mean_scale == pytest.approx(fit["mean_scale"], abs=0.005)
    assert cfg.forecast.spread == pytest.approx(fit["spread"], abs=0.005)
    video = fit["videos"]["fake/clip"]
    n, k = video["clips"], fit["k"]
    a, b, c, v = (np.asarray(video["sums"][key]) for key in "ABCV")
    assert min(a) > 0.1 * max(c)  # the predicted change is not small: the checks below bite
    # the written values, then others (the sums hold for any scale and spread)
    for scale, spread in ((cfg.forecast.mean_scale, cfg.forecast.spread), (0.8, 2.0)):
        res_path = tmp_path / f"eval_{scale}.json"
        # the clip by the name calibrate gave it: sampling is seeded from a video's name and clip index
        assert ev.main([*common, "--sources", "fake/clip", "--stride", "1", "--json", str(res_path),
                        "forecast.quantize=none", f"forecast.mean_scale={scale}", f"forecast.spread={spread}"]) == 0
        res = json.loads(res_path.read_text())
        assert res["clips"] == n
        error = scale ** 2 * a - 2 * scale * b + c
        np.testing.assert_allclose(np.asarray(res["feature_mse"]["copy_last"]) * n, c, rtol=1e-4)
        np.testing.assert_allclose(np.asarray(res["feature_mse"]["mean"]) * n, error, rtol=1e-3)
        np.testing.assert_allclose(res["uncertainty"]["spread_skill_ratio"],
                                   spread * np.sqrt((k + 1) / k * v / error), rtol=1e-3)


def test_held_out_sources_are_refused(capsys):
    rc = calibrate.main(["--sources", "sports2d"])
    assert rc == 2
    assert "held-out" in capsys.readouterr().err
