"""Evaluates forecasts against the frames that really followed: feature MSE, mIoU and depth RMSE.

    python -m deltaworld_core.evaluate --config default --video PATH [--video PATH ...] [--topic TOPIC] \\
        [--labels DIR] [--synthetic 1000:1050] [--dataset cityscapes|kitti|vspw --root DIR] \\
        --context 4 --horizon 3 --k 8 --step-s 0.2 [--dense PATH] [--weights DIR] \\
        [--max-clips N] [--seed 0] [--device cpu] --json OUT.json [key.path=value ...]

Sources. ``--video`` takes whatever ``data.videos.paths`` of a training config takes
(:func:`deltaworld_core.data.media.expand_media`): a video file, a frame folder, a folder searched
recursively, a ``.txt``/``.csv`` list (Kinetics layout too), a rosbag2 recording (``.mcap``,
``.db3`` or a bag folder; ``--topic`` names the image topic, default the bag's only one) or tar
shards. Each recording is reported on its own under its stable name (a video or frame folder
given directly: its file name, as before; anything found inside a folder, list, bag or shard:
the name expand_media gives it).

Clips. Each video is sub-sampled to one frame every ``--step-s`` seconds (the frame nearest to
each point of a grid that starts at the first frame, if within a quarter step; otherwise the
video has a gap there and a new grid starts) and cut into windows of ``context + horizon``
consecutive sub-sampled frames, one window every ``--stride`` sub-sampled frames (default:
``context + horizon``, i.e. non-overlapping). Times are the frames' real stamps. Synthetic seeds
give one clip each, rendered at ``t = 0, step, 2 step, ...`` with exact labels for every frame.
The public datasets give one clip per labelled frame (the last frame of the clip).

Methods, per horizon step h (1..H), in the VFM's final feature space:
  copy_last  the last context frame's features, repeated;
  tokenizer  the codec's upper bound from TRUE PAIRS: each target frame's delta token encoded
             from the true previous frame, the tokens decoded autoregressively, each against the
             previous reconstruction (as the release's README footnote describes it);
  tokenizer_closed_loop
             the codec's upper bound as the release's evaluation code computes it: each true
             target frame encoded against the previous RECONSTRUCTION (step 1: the true last
             frame, so step 1 equals ``tokenizer``) and decoded against it;
  best       the one of K sampled futures whose final-step features are closest (mean Smooth-L1,
             beta 0.1, the release's rule in training and evaluation) to the truth (the paper's
             oracle; one sample per clip, used for every step);
  mean       the average of the K decoded feature maps;
  dense      the dense baseline's rollout (only with ``--dense``);
  present    (mIoU / depth only) the heads on the true features of the target frame.
The first context frame is encoded against the features of an all-black frame, as in training.

Metrics: ``feature_mse`` = mean squared error over tokens and channels (averaged over clips).
``miou`` (percent; classes of the config's heads, label 255 and ids outside the heads' classes
ignored) is computed from a confusion matrix accumulated over all labelled target frames;
``depth_rmse`` (metres) is per frame over valid ground truth (finite, within the heads'
[min_depth, max_depth]), predictions clamped to that range, then averaged over frames. Heads run
at the label resolution. A step without labels (public datasets label only the last frame) is
null. Sampling is seeded per clip from ``--seed``, the stable name of the recording the clip
comes from and the clip's index within it, so a video's numbers do not depend on the batch size
nor on which other recordings share the run.

``--labels DIR`` (for ``--video``): per video frame index i (0-based, of the decoded video),
``DIR/semantic/{i:06d}.png`` (uint8 class ids, 255 = ignore) and/or ``DIR/depth/{i:06d}.png``
(uint16, metres * 256, 0 = invalid, KITTI convention) or ``.npy`` (float metres); with several
videos ``DIR/<video stem>/semantic/...`` is looked up first.
"""

from __future__ import annotations

import sys

from .evaluation.cli import build_parser, main, parse_seeds, run
from .evaluation.clips import Clip, EvaluationError, clip_seed
from .evaluation.evaluator import Evaluator
from .evaluation.metrics import ECE_BINS, METHODS, Accumulator
from .evaluation.report import METRIC_UNITS, format_table, video_average
from .evaluation.sources import DATASETS, ClipSource, expand_videos, held_out_sources
from .evaluation.windows import media_windows, stream_windows, subsample, video_windows

__all__ = ["Accumulator", "Clip", "ClipSource", "DATASETS", "ECE_BINS", "EvaluationError", "Evaluator", "METHODS",
           "METRIC_UNITS", "build_parser", "clip_seed", "expand_videos", "format_table", "held_out_sources", "main",
           "media_windows", "parse_seeds", "run", "stream_windows", "subsample", "video_average", "video_windows"]

if __name__ == "__main__":
    sys.exit(main())
