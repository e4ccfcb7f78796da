"""The forecast node's ROS-side cost per frame, beyond the model (the core benchmark has no ROS).

    python -m deltaworld_ros.bench [--config NAME|PATH] [--repeats 20] [--threads N] [--json OUT.json] [--update BENCH.json] [key.path=value ...]

Runs the Forecaster of ``--config`` on a synthetic stream of camera-sized frames (640x272, as the
shipped demo clip) until it forecasts, then measures (medians after warm-up) what the node adds to
each frame: converting a camera ``sensor_msgs/Image`` (bgr8) to RGB (``convert``), building the
``deltaworld_ros/Futures`` message (``build``) and serialising it as DDS does (``serialize``).
Prints one line and writes ``node_overhead_ms`` (their sum) with the parts under ``node_overhead``
to ``--json``; ``--update`` adds the same two keys to an existing JSON (e.g. the core benchmark's
``results/bench_cpu.json``). Speed targets live here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from deltaworld_core.bench import _median_ms
from deltaworld_core.checkpoint import atomic_write
from deltaworld_core.cli import add_overrides_argument, add_threads_argument, parse_overrides, run_cli
from deltaworld_core.stages import synthetic_stream


def node_overhead(forecast, image: np.ndarray, repeats: int) -> dict:
    """ms of each ROS-side step for one camera frame (``image`` HxWx3 uint8 RGB) and its
    ``forecast``, and the serialised Futures size in bytes."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from deltaworld_ros.futures_msg import forecast_to_msg
    from deltaworld_ros.image_conversion import image_msg_to_rgb

    msg = Image(height=image.shape[0], width=image.shape[1], encoding="bgr8", is_bigendian=0,
                step=image.shape[1] * 3, data=np.ascontiguousarray(image[..., ::-1]).tobytes())
    header = Header(frame_id="camera")
    convert = _median_ms(lambda: image_msg_to_rgb(msg), repeats)
    build = _median_ms(lambda: forecast_to_msg(forecast, header), repeats)
    futures = forecast_to_msg(forecast, header)
    serialise = _median_ms(lambda: serialize_message(futures), repeats)
    return {"convert_ms": convert, "build_ms": build, "serialize_ms": serialise,
            "total_ms": convert + build + serialise, "message_bytes": len(serialize_message(futures))}


def run(config: str = "default", overrides: dict | None = None, repeats: int = 20, threads: int | None = None,
        weights: str | None = None) -> dict:
    from deltaworld_core import Forecaster
    from deltaworld_core.threads import apply_threads

    threads = apply_threads(threads)
    fc = Forecaster.from_config(config, device="cpu", overrides=overrides, weights=weights)
    forecast, stream = None, synthetic_stream(fc.context + 2)
    for i, image in enumerate(stream):
        forecast = fc.step(image, i / 25) or forecast
    if forecast is None:
        raise RuntimeError(f"no forecast after {len(stream)} frames")
    parts = node_overhead(forecast, stream[-1], repeats)
    return {"config": {"name": fc.cfg.name, "k": fc.k, "horizon": fc.horizon, "output_size": list(fc.output_size),
                       "camera": list(stream[-1].shape[:2]), "threads": threads},
            "node_overhead_ms": parts["total_ms"], "node_overhead": parts}


def format_line(result: dict) -> str:
    n, c = result["node_overhead"], result["config"]
    return (f"node_overhead_ms {n['total_ms']:.2f} (convert {n['convert_ms']:.2f}, build {n['build_ms']:.2f}, "
            f"serialize {n['serialize_ms']:.2f}; Futures {n['message_bytes'] / 1e6:.2f} MB: K={c['k']}, "
            f"{c['horizon']} steps, {c['output_size'][0]}x{c['output_size'][1]}; camera "
            f"{c['camera'][1]}x{c['camera'][0]} bgr8)")


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_ros.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default", help="config name (deltaworld_core/configs/NAME.yaml) or YAML path")
    parser.add_argument("--weights", default=None, help="folder of tokenizer/world/heads .safetensors (default: the config's)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions of each step (median reported)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here (atomically)")
    parser.add_argument("--update", type=Path, default=None, metavar="BENCH.json",
                        help="add node_overhead_ms and node_overhead to this existing JSON object (atomically)")
    add_threads_argument(parser)
    add_overrides_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        if args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        existing = None
        if args.update is not None:  # read first: a bad file fails before minutes of measuring
            existing = json.loads(args.update.read_text())
            if not isinstance(existing, dict):
                raise ValueError(f"{args.update} does not hold a JSON object")
        result = run(args.config, parse_overrides(args.overrides), args.repeats, args.threads, args.weights)
        print(format_line(result))
        if args.json is not None:
            _write_json(args.json, result)
        if existing is not None:
            _write_json(args.update, {**existing, "node_overhead_ms": result["node_overhead_ms"],
                                      "node_overhead": result["node_overhead"]})
        return 0

    return run_cli(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
