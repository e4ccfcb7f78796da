"""The one YAML reader for every config the project reads (model configs, train configs, command-line
overrides), bounded so that a small hostile text cannot take the process's time or memory.

PyYAML's SafeLoader builds no Python objects from tags, but it shares an aliased node instead of
copying it, so ``&a [1, 1, ...]`` / ``&b [*a, *a, ...]`` nested nine deep is a 387-byte file that
stands for 9^9 values. Nothing is expanded while loading; whatever walks the value afterwards (a
type check quoting it in its message, ``deepcopy``, ``dataclasses.asdict``) expands it: minutes
and gigabytes for such a file, an error message of a hundred megabytes for a short override.
Merge keys (``<<: [*a, *a]``) grow PyYAML's own node lists the same way
while it constructs the mapping. So the composed node graph is measured before anything is built:
its size as if every alias were copied, its nesting depth, and no alias inside itself.

Anchors and aliases within those bounds keep working. :func:`quote` is how an error message shows a
value from such a text: bounded, whatever the value's size.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

# A config is a few hundred bytes; anything this large is not one (and is not read into memory).
MAX_CONFIG_BYTES = 1 << 20
# Nodes (mappings, sequences, scalars) of the text as if every alias were a copy. The shipped
# configs have under 200; a 1 MB file of plain flow lists could reach ~500k, which no config is.
MAX_EXPANDED_NODES = 100_000
# Characters of all scalars with aliases expanded: a 1 MB scalar aliased a thousand times is a GB.
MAX_EXPANDED_CHARS = 2 * MAX_CONFIG_BYTES
# Nesting of sections and lists; a config is four deep.
MAX_DEPTH = 64
# The longest quotation of a value in an error message.
MAX_QUOTE_CHARS = 120


class YAMLBoundsError(ValueError):
    """The text is (or stands for) more than a config can be; the message says which bound."""


_quoter = reprlib.Repr()
# reprlib walks at most these many elements and levels, so quoting a shared or cyclic structure
# costs the same as quoting a small one
_quoter.maxlevel, _quoter.maxtuple, _quoter.maxlist, _quoter.maxdict, _quoter.maxset = 3, 6, 6, 6, 6
_quoter.maxstring, _quoter.maxother, _quoter.maxlong = 80, 80, 40


def quote(value: Any, limit: int = MAX_QUOTE_CHARS) -> str:
    """``repr(value)`` for an error message, cut to at most ``limit`` characters without ever
    building the whole repr (``'abc'``, ``(16384, 16384)`` and ``inf`` come out as repr has them)."""
    try:
        text = _quoter.repr(value)
    except Exception:  # noqa: BLE001 - a hostile object's __repr__ must not replace the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """``text`` (a key, a path) for an error message: as is, or its first ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _measure(root: yaml.Node) -> None:
    """Raises :class:`YAMLBoundsError` if the graph under ``root``, with aliases expanded, exceeds
    the node, character or depth bounds, or contains itself. Each distinct node is visited once
    (an aliased node's expanded size is remembered), so this is linear in the text."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded scalar chars)
    open_nodes: set[int] = set()
    # iterative post-order walk: a deep text must not exhaust Python's stack here
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        key = id(node)
        if not children_done:
            if key in sizes:
                continue
            if key in open_nodes:
                raise YAMLBoundsError("an alias refers to a node that contains it (a recursive structure)")
            if depth > MAX_DEPTH:
                raise YAMLBoundsError(f"nested more than {MAX_DEPTH} levels deep")
            if isinstance(node, yaml.ScalarNode):
                sizes[key] = (1, len(node.value))
                continue
            open_nodes.add(key)
            stack.append((node, depth, True))
            for child in _children(node):
                if id(child) in open_nodes:
                    raise YAMLBoundsError("an alias refers to a node that contains it (a recursive structure)")
                stack.append((child, depth + 1, False))
            continue
        open_nodes.discard(key)
        nodes, chars = 1, 0
        for child in _children(node):
            n, c = sizes[id(child)]
            nodes, chars = nodes + n, chars + c
        if nodes > MAX_EXPANDED_NODES:
            raise YAMLBoundsError(f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values "
                                  "(a config has a few hundred)")
        if chars > MAX_EXPANDED_CHARS:
            raise YAMLBoundsError(f"its aliases expand to more than {MAX_EXPANDED_CHARS:,} characters of text")
        sizes[key] = (nodes, chars)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _DepthBoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops composing past :data:`MAX_DEPTH` levels. PyYAML composes recursively
    (a deeper text is a RecursionError) and its scanner keeps one candidate key per open flow
    level, checked at every token (measured: 1,500 nested ``[`` took 2.3 s): stopping at the
    depth bound keeps both small, since the scanner only reads as far as the composer asks."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLBoundsError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> Any:
    """The YAML value of ``text`` (None for an empty text), SafeLoader's types only.

    Raises :class:`YAMLBoundsError` for a text beyond the bounds above and ``yaml.YAMLError`` for
    invalid YAML; a value PyYAML cannot build (an integer of 5,000 digits) is a YAMLBoundsError."""
    if len(text) > MAX_CONFIG_BYTES:
        raise YAMLBoundsError(f"{len(text):,} characters is too long for a config (at most {MAX_CONFIG_BYTES:,})")
    loader = _DepthBoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node)
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError, RecursionError) as err:
            raise YAMLBoundsError(f"a value cannot be read ({type(err).__name__}: {clip(str(err))})") from err
    finally:
        loader.dispose()


def read_yaml_file(path: Path) -> Any:
    """:func:`load_yaml` of the file at ``path``, which must be at most :data:`MAX_CONFIG_BYTES`
    (checked before it is read) and UTF-8. Raises ``OSError``, ``UnicodeDecodeError``,
    :class:`YAMLBoundsError` or ``yaml.YAMLError``; callers turn them into their own one-line error."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise YAMLBoundsError(f"{size:,} bytes is too large for a config (at most {MAX_CONFIG_BYTES:,})")
    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)  # a file that grew since stat() is still bounded
    if len(raw) > MAX_CONFIG_BYTES:
        raise YAMLBoundsError(f"more than {MAX_CONFIG_BYTES:,} bytes is too large for a config")
    return load_yaml(raw.decode("utf-8"))
