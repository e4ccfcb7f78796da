"""Replays a video file or a rosbag2 (MCAP) recording as a camera topic at its native rate.

    python -m deltaworld_ros.replay --video PATH [--topic /camera/image_raw] [--rate 1.0] [--loop]
    python -m deltaworld_ros.replay --bag PATH(.mcap|.db3|folder) --topic /camera/image_raw [--rate 1.0] [--loop]

Video frames are published as sensor_msgs/Image (rgb8 or bgr8) stamped with the wall clock, like
a live camera. Bag messages (sensor_msgs/Image or CompressedImage on ``--topic``) are republished
unchanged, with their recorded stamps unless ``--restamp``: a loop then sends time backwards,
which the forecast node answers by restarting its context. Bags are read by the project's own
reader (:mod:`deltaworld_core.data.rosbag`, the one training and evaluation use): MCAP chunk CRCs are
checked, and a corrupt chunk or message is skipped, counted and logged, never published; a bag
with nothing valid to replay exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

def video_messages(path: Path, encoding: str, frame_id: str) -> Iterator[tuple[float, object]]:
    """(seconds since start, Image) per frame of a video file."""
    from deltaworld_ros.image_conversion import array_to_image_msg
    from std_msgs.msg import Header

    from deltaworld_core.data.video import VideoReader

    for rgb, stamp in VideoReader(path):
        pixels = rgb[..., ::-1] if encoding == "bgr8" else rgb
        yield stamp, array_to_image_msg(pixels, encoding, Header(frame_id=frame_id))


def bag_messages(path: Path, topic: str, log=None) -> Iterator[tuple[float, object]]:
    """(seconds since the first message, Image or CompressedImage) for the image messages on
    ``topic``, read by the project's one bag reader (:mod:`deltaworld_core.data.rosbag`: MCAP with
    chunk CRCs checked, or sqlite3). A corrupt chunk, a message that is not valid CDR of its type
    an image whose declared size is zero or absurd, or an Image whose data is shorter than
    ``step x height`` is never published: it is skipped,
    counted (``deltaworld_core.data.refs.skipped``) and logged."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    from deltaworld_core.data.rosbag import bag_images, bag_refs, check_image
    from deltaworld_core.data.refs import record_skip

    ref = bag_refs(path, topic)[0]
    first = None
    for log_time_ns, m in bag_images(ref):
        header = Header(stamp=Time(sec=m.sec, nanosec=m.nanosec), frame_id=m.frame_id)
        try:
            check_image(m)  # a 0x0, absurd or truncated frame is never published
        except ValueError as err:
            record_skip(ref, f"an image logged at {log_time_ns} ns ({err})")
            continue
        if m.format is not None:
            msg = CompressedImage(header=header, format=m.format, data=bytes(m.data))
        else:
            msg = Image(header=header, height=m.height, width=m.width, encoding=m.encoding,
                        is_bigendian=int(m.is_bigendian), step=m.step, data=bytes(m.data))
        first = log_time_ns if first is None else first
        yield (log_time_ns - first) * 1e-9, msg


def check_bag(path: Path, topic: str) -> None:
    """A ValueError naming what is wrong with the bag or its topic (checked before ROS starts,
    from the bag's index: milliseconds)."""
    from deltaworld_core.data.rosbag import bag_refs

    if not Path(path).exists():
        raise FileNotFoundError(f"no such bag: {path}")
    bag_refs(path, topic)  # MediaError (a ValueError) for an unreadable bag or a missing topic


NOBODY = ("nobody subscribes to {topic}: frames go nowhere (is the node running, active, on the same "
          "ROS_DOMAIN_ID and DDS transports?)")


def replay(node, messages, topic: str, *, rate: float, loop: bool, restamp: bool, max_frames: int | None,
           wait_for_subscriber: float = 0.0, log=print, warn=None) -> int:
    """Publishes ``messages()`` (an iterable factory) on ``topic`` at ``rate`` x native speed, each
    with its own type (camera QoS); returns how many were sent. The publisher of a type is created
    on its first message and may wait up to ``wait_for_subscriber`` s for a subscriber to match.
    ``warn`` (default ``log``) is told when the first frame goes out with no subscriber, and at the
    end when none ever matched."""
    from rclpy.qos import qos_profile_sensor_data

    warn = warn or log
    publishers = {}
    heard = False  # some subscriber matched while we published

    def publisher_for(msg_type):
        if msg_type not in publishers:
            publishers[msg_type] = node.create_publisher(msg_type, topic, qos_profile_sensor_data)
            deadline = time.monotonic() + wait_for_subscriber
            while publishers[msg_type].get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            # A match is reported before data flows (~0.5 s later with LARGE_DATA's TCP): a first
            # frame sent at once would be lost.
            time.sleep(1.0 if publishers[msg_type].get_subscription_count() else 0.0)
        return publishers[msg_type]

    sent = 0
    while True:
        start, any_message = None, False
        for offset, msg in messages():
            publisher = publisher_for(type(msg))
            start = time.monotonic() - offset / rate if start is None else start
            any_message = True
            delay = start + offset / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if restamp or msg.header.stamp.sec == msg.header.stamp.nanosec == 0:
                msg.header.stamp = node.get_clock().now().to_msg()
            publisher.publish(msg)
            sent += 1
            if not heard:
                heard = publisher.get_subscription_count() > 0
                if sent == 1 and not heard:
                    warn("replay: " + NOBODY.format(topic=topic) + "; publishing anyway")
            if max_frames is not None and sent >= max_frames:
                return _done(sent, heard, topic, warn)
        if not any_message:
            raise ValueError("no image messages to replay")
        if not loop:
            return _done(sent, heard, topic, warn)
        log(f"replay: looping after {sent} frames")


def _done(sent: int, heard: bool, topic: str, warn) -> int:
    if sent and not heard:
        warn(f"replay: {sent} frames published and no subscriber ever matched: " + NOBODY.format(topic=topic))
    return sent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_ros.replay", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", type=Path, help="any video file OpenCV reads (mp4, avi, ...)")
    source.add_argument("--bag", type=Path, help="a rosbag2 recording: .mcap, .db3 or its folder")
    parser.add_argument("--topic", default="/camera/image_raw",
                        help="topic to publish on (and, for --bag, the recorded image topic to read)")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor relative to the native rate")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8", help="Image encoding for --video")
    parser.add_argument("--frame-id", default="camera", help="header frame_id for --video")
    parser.add_argument("--restamp", action="store_true", help="stamp bag messages with the current time")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--wait-for-subscriber", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for a subscriber before the first frame")
    return parser


def main(argv: list[str] | None = None) -> int:
    import rclpy

    argv = sys.argv[1:] if argv is None else argv
    cli_args = rclpy.utilities.remove_ros_args(["replay", *argv])[1:]
    parser = build_parser()
    args = parser.parse_args(cli_args)
    try:  # bad input: one line and exit status 2, before ROS starts
        if not args.rate > 0:
            raise ValueError(f"--rate must be > 0, got {args.rate}")
        if args.max_frames is not None and args.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
        if args.video is not None:
            if not args.video.is_file():
                raise FileNotFoundError(f"no such video: {args.video}")
            from deltaworld_core.data.video import VideoReader

            VideoReader(args.video)  # opens and checks it: a file OpenCV cannot decode fails here
            messages = lambda: video_messages(args.video, args.encoding, args.frame_id)  # noqa: E731
        else:
            check_bag(args.bag, args.topic)
            messages = lambda: bag_messages(args.bag, args.topic)  # noqa: E731
    except (ValueError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    rclpy.init(args=["replay", *argv])
    node = rclpy.create_node("deltaworld_replay")
    reader_log = _reader_log_to(node)
    try:
        sent = replay(node, messages, args.topic, rate=args.rate, loop=args.loop, restamp=args.restamp,
                      max_frames=args.max_frames, wait_for_subscriber=args.wait_for_subscriber,
                      log=node.get_logger().info, warn=node.get_logger().warning)
        node.get_logger().info(f"replay: published {sent} frames on {args.topic}{_skips(args)}")
        return 0
    except ValueError as err:
        node.get_logger().error(f"{err}{_skips(args)}")
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        logging.getLogger("deltaworld_core.data").removeHandler(reader_log)
        node.destroy_node()
        rclpy.try_shutdown()


def _skips(args) -> str:
    """``"; skipped N ..."`` for a bag some of whose chunks or messages could not be read."""
    if args.bag is None:
        return ""
    from deltaworld_core.data.refs import skipped_counts

    n = sum(skipped_counts().values())
    return f"; skipped {n} corrupt chunk(s)/message(s) of {args.bag}" if n else ""


def _reader_log_to(node) -> logging.Handler:
    """The bag reader's warnings (each skipped chunk or message) as the node's log lines."""

    class ToNode(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            node.get_logger().warning("replay: " + record.getMessage())

    handler = ToNode(logging.WARNING)
    reader = logging.getLogger("deltaworld_core.data")
    reader.addHandler(handler)
    reader.propagate = False
    return handler


if __name__ == "__main__":
    raise SystemExit(main())
