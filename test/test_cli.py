"""The command lines as a user meets them: one override syntax with unknown keys rejected, one line
and exit status 2 for bad input, every flag described in --help, the thread setting applied, and
pictures that carry their own legend."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml

from deltaworld_core import bench, calibrate, evaluate, forecast, released, train
from deltaworld_core.checkpoint import CheckpointNotFoundError
from deltaworld_core.cli import parse_overrides
from deltaworld_core.config import ConfigError
from deltaworld_core.forecaster import WEIGHT_FILES, Forecaster
from deltaworld_core.devices import DeviceError, check_device
from deltaworld_core.threads import auto_threads, available_cores, resolve_threads
from deltaworld_core.viz import LEGEND_MIN_WIDTH, colorize_depth, forecast_grid, grid_tile_size, legend, palette

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "weights": None,
    "vfm": {"family": "dinov2", "weights": "random", "backend": "torch", "embed_dim": 48, "depth": 1,
            "num_heads": 2, "patch_size": 14, "image_size": [28, 42]},
    "tokenizer": {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "mlp_hidden": 64},
    "world": {"dim": 32, "depth": 1, "num_heads": 2},
    "heads": {"class_names": ["sky", "road", "car"], "depth_bins": 16},
    "forecast": {"context": 2, "horizon": 2, "k": 3, "step_s": 0.2, "output_size": [20, 24], "quantize": "none"},
}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory) -> Path:
    """12 frames at 10 fps of a panning texture."""
    path = tmp_path_factory.mktemp("video") / "pan.avi"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (48, 64 + 12 * 3, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(12):
        writer.write(np.ascontiguousarray(base[:, 3 * i: 3 * i + 64]))
    writer.release()
    return path


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def error_lines(err: str, prog: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]


# ----------------------------------------------------------------------------- threads
def test_auto_threads_leaves_half_the_cores_to_the_rest_of_the_machine():
    assert [auto_threads(c) for c in (1, 2, 3, 4, 8, 16, 64)] == [1, 1, 1, 2, 4, 4, 4]
    assert resolve_threads(1) == 1 and resolve_threads(0) == resolve_threads(None) == auto_threads()
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="threads"):
            resolve_threads(bad)


def test_forecaster_applies_its_thread_setting(tiny_config, keep_threads):
    fc = Forecaster.from_config(tiny_config, threads=1)
    assert fc.threads == 1 and torch.get_num_threads() == 1
    two = min(2, available_cores())  # a 1-core machine gets 1 (more threads than cores are clamped)
    fc = Forecaster.from_config(tiny_config, threads=2)
    assert fc.threads == two and torch.get_num_threads() == two
    fc = Forecaster.from_config(tiny_config)  # the default: auto
    assert fc.threads == auto_threads() == torch.get_num_threads()
    with pytest.raises(ValueError, match="threads"):
        Forecaster.from_config(tiny_config, threads=-2)


def test_forecast_cli_reports_and_applies_threads(tiny_config, tiny_video, tmp_path, capsys, keep_threads):
    assert forecast.main(["--video", str(tiny_video), "--out", str(tmp_path), "--config", str(tiny_config),
                          "--threads", "1", "--max-frames", "4"]) == 0
    summary = yaml.safe_load(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["threads"] == 1 and torch.get_num_threads() == 1


def test_threads_above_the_cores_are_clamped_with_one_warning(caplog, tmp_path):
    cores = available_cores()
    with caplog.at_level("WARNING", logger="deltaworld_core.threads"):
        assert resolve_threads(cores + 254) == cores
        assert resolve_threads(cores + 254) == cores
        assert resolve_threads(cores) == cores
    warnings = [r.getMessage() for r in caplog.records if r.name == "deltaworld_core.threads"]
    assert len(warnings) == 1 and f"threads={cores + 254} is more than the {cores} CPU cores" in warnings[0]
    path = tmp_path / "train.yaml"
    path.write_text("stage: tokenizer\n")
    assert train.load_train_config(path, [f"threads={cores + 254}"]).threads == cores
    assert train.load_train_config(path, ["threads=0"]).threads == 0  # 0: torch's default, as documented
    with pytest.raises(ConfigError, match="threads must be >= 0"):
        train.load_train_config(path, ["threads=-1"])


def missing_device() -> str:
    """A CUDA device this machine lacks: any on a CPU-only torch, one past the last on a GPU machine."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


def test_check_device_names_what_is_missing():
    assert check_device("cpu") == torch.device("cpu")
    assert check_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="cuda") as err:
        check_device(missing_device())
    assert "\n" not in str(err.value)
    with pytest.raises(DeviceError, match="is not a torch device"):
        check_device("gpu0")


@pytest.mark.parametrize("tool", ["train", "evaluate", "bench", "calibrate", "forecast"])
def test_a_missing_device_is_one_line_and_exit_2_in_every_core_cli(tool, tiny_config, tiny_video, tmp_path, capsys):
    device = missing_device()
    argv = {
        "train": ["--config", str(REPO / "deltaworld_core" / "configs" / "train_tokenizer.yaml"),
                  f"out={tmp_path / 'run'}", f"device={device}"],
        "evaluate": ["--config", str(tiny_config), "--synthetic", "0:1", "--no-cache", "--device", device],
        "bench": ["--config", str(tiny_config), "--steps", "1", "--device", device],
        "calibrate": ["--config", str(tiny_config), "--device", device],
        "forecast": ["--video", str(tiny_video), "--out", str(tmp_path / "o"), "--config", str(tiny_config),
                     "--device", device],
    }[tool]
    module = {"train": train, "evaluate": evaluate, "bench": bench, "calibrate": calibrate, "forecast": forecast}[tool]
    assert module.main(argv) == 2
    err = capsys.readouterr().err
    lines = error_lines(err, f"python -m deltaworld_core.{tool}")
    assert len(lines) == 1 and f"device {device}" in lines[0], err[-800:]
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()  # nothing started


def test_every_cli_has_a_threads_flag():
    for parser in (forecast.build_parser(), bench.build_parser(), evaluate.build_parser()):
        assert "--threads" in parser._option_string_actions, parser.prog


# ----------------------------------------------------------------------------- one override syntax
def test_overrides_parse_one_way():
    assert parse_overrides(["forecast.k=16", "vfm.image_size=[224, 224]", "weights=null"]) == {
        "forecast.k": 16, "vfm.image_size": [224, 224], "weights": None}
    for bad in ("forecast.k", "=3", "forecast..k=3", ".k=3"):
        with pytest.raises(ConfigError, match="key.path=value"):
            parse_overrides([bad])


@pytest.mark.parametrize("override, message", [
    ("forecast.kk=3", "unknown config key.*forecast.kk"),
    ("forecast.k=abc", "forecast.k: expected an integer"),
    ("nosuchsection.x=1", "unknown config key.*nosuchsection"),
    ("forecast.k", "key.path=value"),
])
def test_forecast_cli_rejects_bad_overrides_in_one_line(override, message, tiny_config, tiny_video, tmp_path, capsys):
    rc = forecast.main(["--video", str(tiny_video), "--out", str(tmp_path / "o"), "--config", str(tiny_config),
                        override])
    lines = error_lines(capsys.readouterr().err, "python -m deltaworld_core.forecast")
    assert rc == 2 and len(lines) == 1
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "o").exists()  # nothing written


def test_unknown_keys_are_rejected_by_bench_evaluate_and_released(tiny_config, tmp_path, capsys):
    assert bench.main(["--config", str(tiny_config), "--steps", "1", "forecast.kk=3"]) == 2
    assert len(error_lines(capsys.readouterr().err, "python -m deltaworld_core.bench")) == 1
    assert evaluate.main(["--config", str(tiny_config), "--synthetic", "0:1", "--no-cache", "forecast.kk=3"]) == 2
    assert len(error_lines(capsys.readouterr().err, "python -m deltaworld_core.evaluate")) == 1
    some_file = tmp_path / "x.bin"
    torch.save({"a": torch.zeros(1)}, some_file)
    for args in (["forecast.kk=3"], ["--set", "forecast.kk=3"]):
        assert released.main(["check", str(some_file), "--part", "deltatok", "--config", str(tiny_config), *args]) == 2
        lines = error_lines(capsys.readouterr().err, "python -m deltaworld_core.released")
        assert len(lines) == 1 and "forecast.kk" in lines[0]


def test_evaluate_takes_the_same_override_as_its_alias(tiny_config, tmp_path):
    args = evaluate.build_parser().parse_args(["--config", str(tiny_config), "forecast.k=5"])
    assert parse_overrides(args.overrides) == {"forecast.k": 5}


# ----------------------------------------------------------------------------- errors: one line, exit 2
def test_forecast_cli_bad_input_is_one_line_exit_2(tiny_config, tiny_video, tmp_path, capsys):
    prog = "python -m deltaworld_core.forecast"
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("vfm: [unclosed\n")
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    partial = tmp_path / "run"
    partial.mkdir()
    (partial / WEIGHT_FILES["tokenizer"]).write_bytes(b"")
    cases = {
        "missing video": ["--video", str(tmp_path / "nope.mp4"), "--config", str(tiny_config)],
        "not a video": ["--video", str(not_video), "--config", str(tiny_config)],
        "bad yaml": ["--video", str(tiny_video), "--config", str(bad_yaml)],
        "unknown config": ["--video", str(tiny_video), "--config", "no_such_config"],
        "partly trained run": ["--video", str(tiny_video), "--config", str(tiny_config), "--weights", str(partial)],
        "bad threads": ["--video", str(tiny_video), "--config", str(tiny_config), "--threads", "-1"],
        "bad max-frames": ["--video", str(tiny_video), "--config", str(tiny_config), "--max-frames", "0"],
    }
    for name, args in cases.items():
        rc = forecast.main([*args, "--out", str(tmp_path / "out")])
        lines = error_lines(capsys.readouterr().err, prog)
        assert rc == 2 and len(lines) == 1, (name, lines)


def test_cli_error_is_exactly_one_line_on_stderr(tiny_config, tmp_path):
    """As a user sees it: a separate process, nothing but the one line."""
    proc = subprocess.run([sys.executable, "-m", "deltaworld_core.forecast", "--video", str(tmp_path / "x.mp4"),
                           "--out", str(tmp_path / "o"), "--config", str(tiny_config)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"python -m deltaworld_core.forecast: error: video not found: "
                                               f"{tmp_path / 'x.mp4'}"]


def test_bench_bad_vfm_weights_is_one_line_exit_2(tiny_config, tmp_path, capsys, recwarn):
    hostile = tmp_path / "vfm.pth"
    hostile.write_bytes(b"\x80\x04cos\nsystem\n.")  # a pickle that would call os.system
    assert bench.main(["--config", str(tiny_config), "--steps", "1", f"vfm.weights={hostile}"]) == 2
    lines = error_lines(capsys.readouterr().err, "python -m deltaworld_core.bench")
    assert len(lines) == 1 and str(hostile) in lines[0]
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]  # no torch remark around it


def test_released_check_missing_file_is_one_line_exit_2(tiny_config, tmp_path, capsys):
    assert released.main(["check", str(tmp_path / "none.bin"), "--part", "deltatok", "--config", str(tiny_config)]) == 2
    assert len(error_lines(capsys.readouterr().err, "python -m deltaworld_core.released")) == 1


# ----------------------------------------------------------------------------- partly trained runs
def test_a_run_folder_with_missing_stages_names_them(tiny_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / WEIGHT_FILES["tokenizer"]).write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match=r"stage\(s\) world, heads not trained yet"):
        Forecaster.from_config(tiny_config, weights=run)
    (run / WEIGHT_FILES["world"]).write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match=r"heads.safetensors: stage\(s\) heads not trained yet"):
        Forecaster.from_config(tiny_config, weights=run)


# ----------------------------------------------------------------------------- --help
def _all_parsers() -> list[argparse.ArgumentParser]:
    from deltaworld_ros import demo, replay

    parsers = [forecast.build_parser(), bench.build_parser(), evaluate.build_parser(), demo.build_parser(),
               replay.build_parser()]
    top = released.build_parser()
    parsers.append(top)
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())
    return parsers


def test_every_flag_of_every_cli_is_described_in_help():
    skip = (argparse._HelpAction, argparse._SubParsersAction)
    undescribed = [f"{p.prog} {'/'.join(a.option_strings) or a.dest}" for p in _all_parsers() for a in p._actions
                   if not isinstance(a, skip) and not (a.help or "").strip()]
    assert undescribed == []


# ----------------------------------------------------------------------------- evaluate's table
def test_evaluate_table_states_units_and_which_way_is_better():
    result = {"clips": 2, "k": 8, "step_s": 0.2, "context": 4,
              "feature_mse": {"copy_last": [0.5, 0.9]}, "miou": {"best": [50.0, 40.0]},
              "depth_rmse": {"best": [7.0, 9.0]}}
    table = evaluate.format_table(result)
    assert "feature_mse = mean squared error" in table and "lower is better" in table
    assert "miou = mean intersection over union in percent, higher is better" in table
    assert "depth_rmse = root mean squared depth error in metres, lower is better" in table
    assert "h1 (0.20s)" in table


# ----------------------------------------------------------------------------- pictures
def fake_forecast(k=8, horizon=3, h=20, w=24, classes=("sky", "road", "car")):
    rng = np.random.default_rng(1)
    semantic = rng.integers(0, len(classes), (k, horizon, h, w), dtype=np.uint8)
    depth = rng.uniform(1, 60, (k, horizon, h, w)).astype(np.float32)
    return SimpleNamespace(
        stamp=10.0, stamps=10.0 + 0.2 * np.arange(1, horizon + 1), semantic=semantic, depth=depth,
        class_names=list(classes),
        summary=SimpleNamespace(semantic_mode=semantic[0], agreement=rng.uniform(0, 1, (horizon, h, w))))


def _colour_present(picture: np.ndarray, colour) -> bool:
    return bool(np.all(picture == np.asarray(colour, np.uint8), axis=-1).any())


def test_legend_shows_every_class_colour_and_a_depth_bar_in_metres():
    names = ["sky", "road", "car", "person"]
    key = legend(400, names, max_depth=80.0)
    for i in range(len(names)):
        assert np.all(key == palette(len(names))[i], axis=-1).sum() >= 100  # an 11x11 swatch each
    # the depth bar runs through the colours of the nearest and farthest depth drawn
    for metres in (0.5, 80.0):
        assert _colour_present(key, colorize_depth(np.full((1, 1), metres, np.float32))[0, 0])
    many = legend(400, [f"c{i}" for i in range(200)])  # bounded however many classes
    assert many.shape[0] < 400


def test_forecast_grid_has_legend_real_row_and_no_empty_tiles():
    fc = fake_forecast()
    image = np.random.default_rng(2).integers(0, 256, (30, 60, 3), dtype=np.uint8)
    future = [image[::-1].copy(), None, image]
    grid = forecast_grid(image, fc, future_frames=future)
    tw, th = grid_tile_size(image.shape[:2], fc.semantic.shape[2])
    rows = 1 + 1 + 4  # mode row, real row, 4 of the 8 samples
    band = grid.shape[0] - rows * th
    assert band >= th and grid.shape[1] == max(2 * 3 * tw, tw + LEGEND_MIN_WIDTH)  # legend at least its minimum
    key = legend(2 * 3 * tw - tw, fc.class_names, 80.0, lines=(
        "forecast of the frame at t = 10.00 s; times are seconds after it",
        "K = 8 hypotheses; rows show samples 0-3 (the first 4 of 8); steps +0.20 s, +0.40 s, +0.60 s"))
    assert np.array_equal(grid[: key.shape[0], tw:], key)  # the legend, with K and the samples drawn
    tiles = [grid[band + r * th: band + (r + 1) * th, c * tw: (c + 1) * tw] for r in range(rows) for c in range(6)]
    tiles.append(grid[:th, :tw])  # the input
    assert all(t.reshape(-1, 3).std(0).max() > 0 for t in tiles)  # no empty tile
    without = forecast_grid(image, fc, max_hypotheses=2)
    assert without.shape[0] == band + 3 * th  # no real row without recorded frames; 2 samples drawn
    with pytest.raises(ValueError, match="one per step"):
        forecast_grid(image, fc, future_frames=[image])


def test_forecast_cli_png_carries_the_legend_and_the_real_frames(tiny_config, tiny_video, tmp_path, capsys):
    out = tmp_path / "pngs"
    assert forecast.main(["--video", str(tiny_video), "--out", str(out), "--config", str(tiny_config),
                          "--threads", "1"]) == 0
    pngs = sorted(out.glob("forecast_*.png"))
    assert pngs
    picture = cv2.imread(str(pngs[0]))[..., ::-1]
    tw, th = grid_tile_size((48, 64), 20)
    body = 1 + 1 + 3  # mode, real, K = 3 samples
    band = picture[: picture.shape[0] - body * th]
    for i in range(3):
        assert _colour_present(band, palette(3)[i])
    real = picture[picture.shape[0] - 4 * th: picture.shape[0] - 3 * th, :tw]
    assert real.reshape(-1, 3).std(0).max() > 10  # a real frame, not a placeholder


# ----------------------------------------------------------------------------- the ROS demo's arguments
@pytest.mark.parametrize("args, message", [
    (["forecast.kk=4"], "unknown config key.*forecast.kk"),
    (["--param", "kk:=4"], "forecast_node has no parameter 'kk'"),
    (["--param", "k=4"], "must look like NAME:=VALUE"),
    (["--threads", "-1"], "threads"),
    (["--max-frames", "0"], "--max-frames must be >= 1"),
])
def test_demo_rejects_bad_arguments_before_starting_anything(args, message, tmp_path, capsys):
    pytest.importorskip("rclpy")
    from deltaworld_ros import demo

    assert demo.main(["--out", str(tmp_path / "demo"), *args]) == 2
    lines = error_lines(capsys.readouterr().err, "python -m deltaworld_ros.demo")
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not (tmp_path / "demo" / "node.log").exists()  # no node was started


def test_demo_reads_a_params_file_of_nested_aliases_in_bounds(tmp_path, capsys):
    """Issue 21 item 7 for the demo: it read the user's params file with plain yaml.safe_load,
    which expands nested aliases without bound (10^9 values here)."""
    pytest.importorskip("rclpy")
    from deltaworld_ros import demo

    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 10)}]" for i in range(1, 9)]
    lines.append('"/**": {ros__parameters: {model_config: default, k: *i}}')
    bomb = tmp_path / "params.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert demo.main(["--out", str(tmp_path / "demo"), "--params-file", str(bomb), "forecast.k=4"]) == 2
    err = error_lines(capsys.readouterr().err, "python -m deltaworld_ros.demo")
    assert len(err) == 1 and "aliases expand to more than" in err[0], err


def test_demo_node_subscribes_best_effort_like_its_camera_unless_the_user_says_otherwise(tmp_path):
    """The demo's camera publishes best effort; a node left on best_available subscribes reliably
    when DDS has not shown it the camera yet, and Fast DDS warns of the incompatible QoS."""
    pytest.importorskip("rclpy")
    from deltaworld_ros import demo

    args = demo.build_parser().parse_args(["--out", str(tmp_path)])
    cmd = demo.node_command(args, tmp_path / "params.yaml", [])
    assert cmd[cmd.index("input_reliability:=best_effort") - 1] == "-p"
    user = demo.node_command(args, tmp_path / "params.yaml", ["input_reliability:=reliable"])
    assert [p for p in user if p.startswith("input_reliability:=")][-1] == "input_reliability:=reliable"


def test_demo_writes_the_overridden_model_config_for_the_node(tmp_path):
    pytest.importorskip("rclpy")
    from deltaworld_ros import demo

    args = demo.build_parser().parse_args(["--out", str(tmp_path), "forecast.k=4", "forecast.horizon=2"])
    args.out.mkdir(parents=True, exist_ok=True)
    path = demo.overridden_model_config(args, demo.default_params_file(), [])
    from deltaworld_core.config import load_config

    cfg = load_config(path)
    assert (cfg.forecast.k, cfg.forecast.horizon) == (4, 2)
    assert cfg.weights == load_config("default").weights  # the shipped weights, by absolute path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mcap", "no such bag"),
    (lambda d: (d / "notes.mcap").write_text("not a recording") and d / "notes.mcap", "not an MCAP file"),
    (lambda d: d, "without .mcap files"),
])
def test_replay_bad_bag_is_one_line_exit_2(make, message, tmp_path, capsys):
    pytest.importorskip("rclpy")
    from deltaworld_ros import replay

    assert replay.main(["--bag", str(make(tmp_path)), "--topic", "/camera/image_raw"]) == 2
    lines = error_lines(capsys.readouterr().err, "python -m deltaworld_ros.replay")
    assert len(lines) == 1 and message in lines[0], lines


def test_replay_undecodable_video_is_one_line_exit_2(tmp_path, capsys):
    pytest.importorskip("rclpy")
    from deltaworld_ros import replay

    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 64)
    assert replay.main(["--video", str(bad)]) == 2
    lines = error_lines(capsys.readouterr().err, "python -m deltaworld_ros.replay")
    assert len(lines) == 1 and "cannot decode video" in lines[0], lines
