"""The renderer registry: marker name -> function ``results_dir -> markdown``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

Renderer = Callable[[Path], str]
RENDERERS: dict[str, Renderer] = {}


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    """Registers a table renderer under the name used in its page's marker."""
    def register(fn: Renderer) -> Renderer:
        if name in RENDERERS:
            raise ValueError(f"renderer {name!r} registered twice")
        RENDERERS[name] = fn
        return fn
    return register
