"""Camera images without ROS: header checks, compressed decoding and raw pixel conversion.

The one place where camera frames become RGB uint8: the forecast node's camera input
(``deltaworld_ros.image_conversion``), rosbag2 recordings, frame folders and tar shards all
convert through it. numpy and OpenCV only: the runtime imports it without any training code.
"""

from .decode import (REDUCED_FLAGS, REDUCTIONS, block_average, compressed_header, decode_compressed, decode_image,
                     decode_to_side, file_header, shrink_to_side, side_factor)
from .errors import (ABSURD_SIZE, TRUNCATED_DATA, UNDECODABLE, UNSUPPORTED_ENCODING, ZERO_SIZE, ImageError,
                     quoted)
from .headers import MAX_PIXELS, MAX_SIDE, check_size, compressed_kind, compressed_size, jpeg_size, pnm_size
from .pixels import CAMERA_ENCODINGS, ENCODINGS, PixelLayout, raw_pixels, raw_to_rgb

__all__ = [n for n in dir() if not n.startswith("_")]
