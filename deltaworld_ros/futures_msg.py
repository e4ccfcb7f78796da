"""deltaworld_core Forecast <-> deltaworld_ros/msg/Futures.

Stamps are handled in integer nanoseconds from the camera header, so the output header is exactly
the input's and target stamps do not drift through float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from deltaworld_ros.image_conversion import (FrameIdTooLongError, StampOutOfRangeError, array_to_image_msg, cut,
                                             image_to_array)
from deltaworld_ros.msg import Futures, HorizonSummary, Hypothesis

NS = 1_000_000_000
# builtin_interfaces/Time.sec is an int32: 2^31 s (2038-01-19) would serialise as -2^31.
MAX_STAMP_NS = (2**31 - 1) * NS + NS - 1
# The frame_id is copied into every output header (2 + K x H x 2 + H x 4 of them); REP-103/105
# frame ids are a few dozen characters, so anything longer is a broken driver, not a frame.
MAX_FRAME_ID_LENGTH = 256


def check_header(header: Header, horizon_s: float = 0.0) -> None:
    """Raises FrameIdTooLongError / StampOutOfRangeError when a camera header cannot be copied
    into a Futures message whose last target lies ``horizon_s`` after the header's stamp."""
    if len(header.frame_id) > MAX_FRAME_ID_LENGTH:
        raise FrameIdTooLongError(f"frame_id has {len(header.frame_id)} characters (at most {MAX_FRAME_ID_LENGTH}): "
                                  f"{header.frame_id[:40]!r}...")
    stamp = header.stamp
    if stamp.sec < 0 or stamp.nanosec >= NS:
        raise StampOutOfRangeError(f"stamp sec={stamp.sec} nanosec={stamp.nanosec} is not a valid time")
    last_ns = time_to_ns(stamp) + round(horizon_s * NS)
    if last_ns > MAX_STAMP_NS:
        raise StampOutOfRangeError(f"stamp {time_to_ns(stamp) / NS:.3f} s + horizon {horizon_s:.3f} s passes "
                                   f"2^31 s (2038-01-19), the largest builtin_interfaces/Time")


def time_to_ns(stamp: Time) -> int:
    return stamp.sec * NS + stamp.nanosec


def ns_to_time(ns: int) -> Time:
    if not 0 <= ns <= MAX_STAMP_NS:
        raise StampOutOfRangeError(f"{ns / NS:.3f} s does not fit builtin_interfaces/Time (0 to 2^31 s)")
    return Time(sec=ns // NS, nanosec=ns % NS)


def time_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_time(seconds: float) -> Time:
    return ns_to_time(round(seconds * NS))


def forecast_to_msg(forecast, header: Header) -> Futures:
    """``forecast`` (a deltaworld_core Forecast) made from the image with ``header`` -> Futures.
    Every image carries the frame_id and its own target stamp. Raises FrameIdTooLongError or
    StampOutOfRangeError (ValueErrors) for a header that :func:`check_header` rejects."""
    check_header(header)
    base_ns = time_to_ns(header.stamp)
    # Offsets from the newest frame, rounded to whole microseconds: float64 seconds near 1.7e9
    # resolve only ~0.2 us, and planners expect exactly step_s apart.
    offsets_ns = [round((t - forecast.stamp) * 1e6) * 1000 for t in np.asarray(forecast.stamps, dtype=np.float64)]
    target_headers = [Header(stamp=ns_to_time(base_ns + off), frame_id=header.frame_id) for off in offsets_ns]

    hypotheses = [
        Hypothesis(
            semantic=[array_to_image_msg(forecast.semantic[k, h], "mono8", target_headers[h]) for h in range(forecast.horizon)],
            depth=[array_to_image_msg(forecast.depth[k, h], "32FC1", target_headers[h]) for h in range(forecast.horizon)],
        )
        for k in range(forecast.k)
    ]
    s = forecast.summary
    summary = [
        HorizonSummary(
            semantic_mode=array_to_image_msg(s.semantic_mode[h], "mono8", target_headers[h]),
            semantic_agreement=array_to_image_msg(s.agreement[h], "32FC1", target_headers[h]),
            depth_mean=array_to_image_msg(s.depth_mean[h], "32FC1", target_headers[h]),
            depth_std=array_to_image_msg(s.depth_std[h], "32FC1", target_headers[h]),
        )
        for h in range(forecast.horizon)
    ]
    return Futures(
        header=Header(stamp=header.stamp, frame_id=header.frame_id),
        target_stamps=[h.stamp for h in target_headers],
        class_names=list(forecast.class_names),
        hypotheses=hypotheses,
        summary=summary,
    )


@dataclass
class DecodedFutures:
    """A Futures message as arrays (for planners in Python, tests and the demo)."""

    stamp: float  # seconds of the newest camera image used
    frame_id: str
    target_stamps: np.ndarray  # [H] float64 seconds
    class_names: list[str]
    semantic: np.ndarray  # [K, H, h, w] uint8 class ids
    depth: np.ndarray  # [K, H, h, w] float32 metres
    semantic_mode: np.ndarray  # [H, h, w] uint8
    agreement: np.ndarray  # [H, h, w] float32
    depth_mean: np.ndarray  # [H, h, w] float32
    depth_std: np.ndarray  # [H, h, w] float32


def _stack(images, encoding: str) -> np.ndarray:
    for image in images:
        if image.encoding != encoding:
            raise ValueError(f"expected {encoding} images, got {cut(image.encoding)}")
    return np.stack([image_to_array(image) for image in images])


def decode_futures(msg: Futures) -> DecodedFutures:
    """Futures -> arrays; raises ValueError when images have unexpected encodings or sizes."""
    return DecodedFutures(
        stamp=time_to_seconds(msg.header.stamp),
        frame_id=msg.header.frame_id,
        target_stamps=np.array([time_to_seconds(t) for t in msg.target_stamps], dtype=np.float64),
        class_names=list(msg.class_names),
        semantic=np.stack([_stack(h.semantic, "mono8") for h in msg.hypotheses]),
        depth=np.stack([_stack(h.depth, "32FC1") for h in msg.hypotheses]),
        semantic_mode=_stack([s.semantic_mode for s in msg.summary], "mono8"),
        agreement=_stack([s.semantic_agreement for s in msg.summary], "32FC1"),
        depth_mean=_stack([s.depth_mean for s in msg.summary], "32FC1"),
        depth_std=_stack([s.depth_std for s in msg.summary], "32FC1"),
    )
