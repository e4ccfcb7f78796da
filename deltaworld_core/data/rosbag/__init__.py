"""rosbag2 recordings (MCAP and sqlite3) of camera topics, read and written without ROS.

Why a small CDR codec of our own (:mod:`.cdr`) rather than ``rosbags`` or
``mcap-ros2-support``: the two message types a camera records (``sensor_msgs/msg/Image`` and
``CompressedImage``) are a header, a few strings and integers and one byte array, which decode
here as a zero-copy numpy view of the message buffer. Measured (docs/data-sources.md, "Why this
reader"), this decoder costs a few microseconds per message, below the pixel conversion it
feeds; the libraries would add dependencies (``rosbags`` pulls ``ruamel.yaml`` and more) for no
speed and no format we need. MCAP goes through the PyPI ``mcap`` package (:mod:`.mcap_reader`),
sqlite3 bags through Python's ``sqlite3`` (:mod:`.sqlite_reader`); :mod:`.reader` turns either
into frames, :mod:`.writer` writes both.

Pixels are converted by :mod:`deltaworld_core.imaging`, the forecast node's own conversion:
``step`` row padding and ``is_bigendian`` honoured, 16-bit grey scaled from its full range, 8-bit
Bayer patterns demosaiced, compressed frames' headers checked before decoding.
"""

from .cdr import (COMPRESSED_TYPE, IMAGE_TYPE, IMAGE_TYPES, CdrError, ImageMessage, decode_image_message,
                  encode_image_message)
from .reader import (bag_duration, bag_frames, bag_images, bag_messages, bag_refs, check_image, frame_stamp,
                     image_to_rgb, image_topics)
from .storage import MCAP_MAGIC, SQLITE_MAGIC, bag_files, read_counts
from .writer import MSG_DEFINITIONS, BagWriter, depth_message, image_message, write_frames

__all__ = [n for n in dir() if not n.startswith("_")]
