"""DeltaWorld core: VFM, DeltaTok codec, DeltaWorld predictor, heads and the streaming forecaster.

Pure Python/PyTorch; no ROS dependency. ``Forecaster`` is imported lazily so that light modules
(config, data) do not pull in the models.
"""

from .config import ModelConfig, load_config

__all__ = ["Forecaster", "Forecast", "ModelConfig", "load_config"]


def __getattr__(name):
    if name in ("Forecaster", "Forecast"):
        from . import forecaster  # on first use: `from deltaworld_core import load_config` stays light

        return getattr(forecaster, name)
    raise AttributeError(name)
