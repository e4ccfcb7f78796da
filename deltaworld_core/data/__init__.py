"""Data: recordings of every kind read as one stream of frames (:mod:`.recordings`, the dispatcher
above the readers :mod:`.capture`, :mod:`.folders`, :mod:`.lists`, :mod:`.shards` and
:mod:`.rosbag`), training windows and their sampling, clip-consistent augmentation, the synthetic
world and loaders for the evaluation datasets (Cityscapes, KITTI depth, VSPW). numpy/torch/OpenCV
only; the runtime (the forecaster, the node) imports none of it."""
from .datasets import (CITYSCAPES_CLASSES, VSPW_CLASSES, CityscapesClips, KittiDepthClips,
                       VSPWClips, collate_eval, read_index_png)
from .synthetic import (CAR_MANOEUVRES, CLASS_NAMES, PERSON_MANOEUVRES, SyntheticClipDataset,
                        SyntheticWorld, branch_variants)
from .transforms import ClipAugment, CropParams, apply_crop, sample_crop
from .video import (FrameFolder, VideoClipDataset, VideoReader, open_video, read_rgb,
                    sample_video_paths)

__all__ = [n for n in dir() if not n.startswith("_")]
