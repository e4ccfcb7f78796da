"""Training of DeltaTok, DeltaWorld, the heads and the dense baseline.

:mod:`.config` (the YAML contract), :mod:`.loop` (the loop shared by every stage),
:mod:`.checkpoints` (atomic checkpoints, resume with fallback, metrics/TensorBoard) and one module
per stage: :mod:`.tokenizer`, :mod:`.world`, :mod:`.heads`, :mod:`.dense`. All data comes from
:mod:`deltaworld_core.data`. The command line is ``python -m deltaworld_core.train``.
"""
from .config import STAGES, TrainConfig, load_train_config
from .loop import run

__all__ = ["STAGES", "TrainConfig", "load_train_config", "run"]
