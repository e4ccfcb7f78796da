"""scripts/compare_evals.py: the largest change of every held-out ratio between two evaluations."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_evals", REPO / "scripts" / "compare_evals.py")
compare_evals = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_evals)


def evaluation() -> dict:
    mse = {"copy_last": [1.0, 2.0], "mean": [0.9, 1.9], "best": [1.5, 2.5]}
    video = {"clips": 3, "feature_mse": copy.deepcopy(mse),
             "median_clip_ratio_to_copy_last": {"copy_last": [1.0, 1.0], "mean": [0.95, 0.97]},
             "uncertainty": {"spread_skill_ratio": [0.9, 1.1]}}
    return {"clips": 6, "k": 8, "horizon": 2, "step_s": 0.2, "context": 4, "feature_mse": mse,
            "videos": {"a/one": video, "b/two": copy.deepcopy(video)},
            "video_average": {"ratio_to_copy_last": {"copy_last": [1.0, 1.0], "mean": [0.9, 0.95],
                                                     "best": [1.5, 1.25]},
                              "spread_skill_ratio": [0.9, 1.1],
                              "median_clip_ratio_to_copy_last": {"copy_last": [1.0, 1.0], "mean": [0.95, 0.97]}}}


def test_identical_evaluations_are_within_any_bound(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(evaluation()))
    out = tmp_path / "cmp.json"
    assert compare_evals.main([str(path), str(path), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["within_bound"] and all(f["max"] == 0 for f in result["families"].values())
    assert result["families"]["per_video_ratio_to_copy_last"]["of"] == 2 * 2 * 2  # videos x methods x steps


def test_a_change_above_the_bound_is_found_where_it_is(tmp_path):
    base, other = evaluation(), evaluation()
    other["videos"]["b/two"]["feature_mse"]["best"][1] = 2.06  # ratio 1.25 -> 1.03
    other["videos"]["b/two"]["median_clip_ratio_to_copy_last"]["mean"][0] = 0.953  # 0.003: within
    families = compare_evals.compare(base, other, bound=0.01)
    per_video = families["per_video_ratio_to_copy_last"]
    assert per_video["where"] == "b/two best step 2" and per_video["max"] == pytest.approx(0.22)
    assert per_video["over_bound"] == ["b/two best step 2: 0.2200"]
    assert families["per_video_median_clip_ratio"]["max"] == pytest.approx(0.003)
    assert not families["per_video_median_clip_ratio"]["over_bound"]
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p, d in zip(paths, (base, other)):
        p.write_text(json.dumps(d))
    assert compare_evals.main([str(p) for p in paths]) == 1


def test_evaluations_of_other_clips_are_refused(tmp_path, capsys):
    base, other = evaluation(), evaluation()
    other["clips"] = 7
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p, d in zip(paths, (base, other)):
        p.write_text(json.dumps(d))
    assert compare_evals.main([str(p) for p in paths]) == 2
    assert "not the same evaluation: clips 6 vs 7" in capsys.readouterr().err
