"""Training settings a hostile or careless user gives, generated here: every number of a train
config finite and in range before anything runs (one line naming the key, exit 2); a run whose
loss, gradients or weights stop being finite stops with one line before the update and never
checkpoints or exports them; evaluate's numeric flags checked the same way; init/pretrained of a
YAML resolve from the YAML's folder, not the working directory; the tokenizer from scratch on
recordings has a shipped config, and its PCA phase logs progress.

Tiny everything (test_train's and test_train_stream's tiny configs): seconds each.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from deltaworld_core import evaluate as ev
from deltaworld_core.checkpoint import read_state, save_state
from deltaworld_core.config import ConfigError
from deltaworld_core.train import load_train_config, main, run
from deltaworld_core.training.checkpoints import NonFiniteError, checkpoint_dir
from deltaworld_core.training.tokenizer import TokenizerStage
from test_train import TINY
from test_train_stream import TINY as STREAM_TINY
from test_train_stream import _write_video

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "deltaworld_core" / "configs"
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("settings")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "cache_dir": str(folder / "cache")}}))
    return path


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# (override as a command line gives it, the same as a value, what the one line must say)
HOSTILE = [
    ("optim.lr=.inf", {"optim.lr": INF}, "optim.lr must be a finite number, got inf"),
    ("optim.lr=.nan", {"optim.lr": NAN}, "optim.lr must be a finite number, got nan"),
    ("optim.lr=-.inf", {"optim.lr": -INF}, "optim.lr must be a finite number, got -inf"),
    ("optim.lr=0.0", {"optim.lr": 0.0}, "optim.lr must be in (0, 10], got 0.0"),
    ("optim.lr=1.0e+30", {"optim.lr": 1e30}, "optim.lr must be in (0, 10], got 1e+30"),
    ("optim.grad_clip=.nan", {"optim.grad_clip": NAN}, "optim.grad_clip must be a finite number, got nan"),
    ("optim.grad_clip=-1.0", {"optim.grad_clip": -1.0}, "optim.grad_clip must be in [0, 1000000], got -1.0"),
    ("optim.weight_decay=.nan", {"optim.weight_decay": NAN}, "optim.weight_decay must be a finite number, got nan"),
    ("optim.betas=[.nan,0.9]", {"optim.betas": [NAN, 0.9]}, "optim.betas[0] must be a finite number, got nan"),
    ("optim.betas=[0.9,.inf]", {"optim.betas": [0.9, INF]}, "optim.betas[1] must be a finite number, got inf"),
    ("optim.betas=[1.0,0.9]", {"optim.betas": [1.0, 0.9]}, "optim.betas must be two numbers in [0, 1), got (1.0, 0.9)"),
    ("optim.betas=[-0.5,0.9]", {"optim.betas": [-0.5, 0.9]}, "optim.betas must be two numbers in [0, 1), got (-0.5, 0.9)"),
    ("optim.warmup_steps=-1", {"optim.warmup_steps": -1}, "optim.warmup_steps must be in [0, 1000000000], got -1"),
    ("seed=-1", {"seed": -1}, "seed must be in [0, 4294967295], got -1"),
    (f"seed={2**64}", {"seed": 2**64}, f"seed must be in [0, 4294967295], got {2**64}"),
    ("data.synthetic.fps=.nan", {"data.synthetic.fps": NAN}, "data.synthetic.fps must be a finite number, got nan"),
    ("data.pair_gap_s=[0.04,.inf]", {"data.pair_gap_s": [0.04, INF]},
     "data.pair_gap_s[1] must be a finite number, got inf"),
    ("data.stream.timeout_s=.inf", {"data.stream.timeout_s": INF},
     "data.stream.timeout_s must be a finite number, got inf"),
    ("dense.mlp_ratio=.nan", {"dense.mlp_ratio": NAN}, "dense.mlp_ratio must be a finite number, got nan"),
    ("loss.bom_beta=.nan", {"loss.bom_beta": NAN}, "loss.bom_beta must be a finite number, got nan"),
]


@pytest.mark.parametrize("text,value,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_nonfinite_and_out_of_range_settings_name_their_key(tiny, tmp_path, capsys, text, value, message):
    with pytest.raises(ConfigError) as err:
        load_train_config(tiny, {"out": str(tmp_path / "a"), **value})
    assert str(err.value) == message
    out = tmp_path / "b"
    assert main(["--config", str(tiny), f"out={out}", text]) == 2
    assert _one_error_line(capsys.readouterr().err).endswith(f"error: {message}")
    assert not out.exists()  # refused before anything was written


def test_the_ends_of_the_optimizer_ranges_are_accepted(tiny):
    cfg = load_train_config(tiny, {"optim.lr": 10.0, "optim.betas": [0.0, 0.999999], "optim.grad_clip": 0.0,
                                   "optim.warmup_steps": 0, "seed": 2**32 - 1, "optim.weight_decay": 0.0})
    assert cfg.seed == 2**32 - 1 and cfg.optim.betas == (0.0, 0.999999)


def _losses_that_turn_nan(monkeypatch, at_call: int) -> None:
    """The tokenizer's loss becomes NaN from its ``at_call``-th evaluation on (as a diverging run's does)."""
    real, calls = TokenizerStage.loss, []

    def loss(self, net, batch):
        calls.append(1)
        value = real(self, net, batch)
        return value * NAN if len(calls) >= at_call else value

    monkeypatch.setattr(TokenizerStage, "loss", loss)


def test_a_nan_loss_stops_before_the_update_and_exports_nothing(tiny, tmp_path, monkeypatch, capsys):
    _losses_that_turn_nan(monkeypatch, at_call=3)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"tokenizer diverged at step 3: the loss and the gradient norm are NaN"):
        run(load_train_config(tiny, {"out": str(out), "steps": 4}))
    assert not (out / "tokenizer.safetensors").exists() and not (out / "model.yaml").exists()
    folders = sorted(checkpoint_dir(load_train_config(tiny, {"out": str(out)})).glob("step_*"))
    assert [f.name for f in folders] == ["step_00000002"]  # the checkpoint of the last finite step, untouched
    assert all(bool(torch.isfinite(v).all()) for v in read_state(folders[0] / "model.safetensors").values())
    assert main(["--config", str(tiny), f"out={tmp_path / 'cli'}", "steps=4"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "diverged at step" in line and "optim.lr" in line


def _updates_that_poison(monkeypatch, at_step: int) -> None:
    """The ``at_step``-th optimizer update leaves an infinite weight (as an infinite rate did)."""
    real, count = torch.optim.AdamW.step, []

    def step(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        count.append(1)
        if len(count) == at_step:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[:3] = INF
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


@pytest.mark.parametrize("steps,checkpoint_every,message", [
    (2, 2, r"the checkpoint of step 2 refused: 3 of [\d,]+ weights are NaN or infinite"),  # the last update
    (2, 5, r"the checkpoint of step 2 refused"),  # the final save, before the export
    (3, 5, r"diverged at step 3: .*the weights are NaN or infinite"),  # caught by the next step
])
def test_nonfinite_weights_are_never_checkpointed_or_exported(tiny, tmp_path, monkeypatch, steps, checkpoint_every,
                                                              message):
    _updates_that_poison(monkeypatch, at_step=2)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=message):
        run(load_train_config(tiny, {"out": str(out), "steps": steps, "checkpoint_every": checkpoint_every}))
    assert not (out / "tokenizer.safetensors").exists()
    assert not list(out.glob("checkpoints/tokenizer/step_*"))  # neither step 2 nor a temporary folder of it
    assert not list(out.glob("checkpoints/tokenizer/.tmp_*"))


def test_resume_passes_over_a_checkpoint_with_nonfinite_weights(tiny, tmp_path, caplog):
    out = tmp_path / "run"
    run(load_train_config(tiny, {"out": str(out), "steps": 2, "checkpoint_every": 1, "keep_checkpoints": 3}))
    latest = out / "checkpoints" / "tokenizer" / "step_00000002" / "model.safetensors"
    save_state({k: torch.full_like(v, NAN) for k, v in read_state(latest).items()}, latest)
    caplog.set_level("INFO")
    run(load_train_config(tiny, {"out": str(out), "steps": 3, "checkpoint_every": 1, "keep_checkpoints": 3}),
        resume=True)
    assert "NaN or infinite weights" in caplog.text and "resumed tokenizer from step 1" in caplog.text
    assert all(bool(torch.isfinite(v).all()) for v in read_state(out / "tokenizer.safetensors").values())


@pytest.mark.parametrize("flags,message", [
    (["--segment", "nan", "1"], "--segment must be two fractions of each video, 0 <= START < END <= 1, got nan 1.0"),
    (["--segment", "0.5", "inf"], "--segment must be two fractions"),
    (["--segment", "0.9", "0.1"], "--segment must be two fractions"),
    (["--max-clips", "-1"], "--max-clips must be >= 1 (leave it out for every clip), got -1"),
    (["--max-clips", "0"], "--max-clips must be >= 1"),
    (["--stride", "-3"], "--stride must be >= 1"),
    (["--fps", "nan"], "--fps must be a frame rate in (0, 1000], got nan"),
    (["--step-s", "inf"], "--step-s must be a number of seconds > 0, got inf"),
])
def test_evaluate_numeric_flags_are_checked_before_anything_runs(tmp_path, capsys, flags, message):
    video = tmp_path / "frames"
    video.mkdir()  # never read: the flags are refused first
    assert ev.main(["--config", "default", "--video", str(video), "--no-cache", *flags]) == 2
    assert f"evaluate: error: {message}" in _one_error_line(capsys.readouterr().err)


def test_init_and_pretrained_of_a_yaml_resolve_from_its_folder(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anywhere but the repository root
    cfg = load_train_config(CONFIGS / "train_bags.yaml")
    shipped = ROOT / "deltaworld_core" / "weights" / "default"
    assert Path(cfg.init) == shipped and Path(cfg.pretrained) == shipped and (shipped / "world.safetensors").is_file()
    assert load_train_config(CONFIGS / "train_bags.yaml", ["init=runs/mine"]).init == "runs/mine"  # command line: cwd
    # a user's recipe folder: a tokenizer run beside the YAMLs, a stage YAML extending a base one
    recipe = tmp_path / "recipe"
    (recipe / "stages").mkdir(parents=True)
    run(load_train_config(tiny, {"out": str(recipe / "tok"), "steps": 1}))
    (recipe / "base.yaml").write_text(yaml.safe_dump({"extends": str(tiny), "pretrained": "tok"}))
    (recipe / "stages" / "world.yaml").write_text(yaml.safe_dump({"extends": "../base.yaml", "stage": "world",
                                                                  "init": "../tok", "steps": 1}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_train_config(recipe / "stages" / "world.yaml", {"out": "run"})
    assert Path(cfg.pretrained) == recipe / "tok" and Path(cfg.init) == recipe / "tok"
    with pytest.raises(Exception, match=r"no world weights at .*recipe/tok/world\.safetensors"):
        run(cfg)  # init names the tokenizer's run folder, which holds no predictor: named by its full path
    cfg = load_train_config(recipe / "stages" / "world.yaml", {"out": "run", "init": None})
    assert run(cfg) == Path("run") / "world.safetensors" and (elsewhere / "run" / "world.safetensors").is_file()


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(2):
        _write_video(folder / f"clip{i}.avi", i)
    return folder


def test_the_tokenizer_from_scratch_on_recordings_logs_its_pca_phase(clips, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    model = {**STREAM_TINY["model"], "tokenizer": {**STREAM_TINY["model"]["tokenizer"], "linear_path": True,
                                                   "linear_grid": [2, 2]}}
    cfg = load_train_config(CONFIGS / "train_bags_tokenizer.yaml", {
        "out": str(tmp_path / "run"), "data.videos.paths": [str(clips)], "model_base": None, "model": model,
        "steps": 1, "batch_size": 4, "threads": 1, "data.stream.workers": 0, "data.stream.round_steps": 2,
        "data.stream.pca_pairs": 12, "data.clip_frames": 4, "data.step_s": [0.1, 0.2]})
    assert cfg.stage == "tokenizer" and cfg.init is None and cfg.data.videos.sources == []
    caplog.set_level("INFO")
    run(cfg)
    lines = [r.getMessage() for r in caplog.records if "PCA init:" in r.getMessage()]
    # 4 reads a round x 2 steps = 8 pairs a round (whole-frame pairs left out): a line per round
    assert len(lines) >= 2 and lines[-1].startswith("linear path PCA init: 12/12 pairs after"), lines
    assert "linear path initialised by PCA" in caplog.text


def test_unfetched_sources_beside_recordings_name_both_ways_out(clips, tmp_path):
    cfg = load_train_config(CONFIGS / "train_bags_tokenizer.yaml", {
        "out": str(tmp_path / "run"), "data.videos.paths": [str(clips)], "data.videos.sources": ["visp"],
        "data.media_cache": str(tmp_path / "empty_cache")})
    with pytest.raises(ConfigError) as err:
        run(cfg)
    text = str(err.value)
    assert "deltaworld_core.data.fetch --sources visp" in text and "set data.videos.sources=[]" in text
    assert "\n" not in text and not (tmp_path / "run").exists()
