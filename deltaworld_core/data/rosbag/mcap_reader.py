"""rosbag2 MCAP storage files, read through the PyPI ``mcap`` package chunk by chunk with CRCs
checked: a corrupt chunk is skipped, counted and logged, never decoded into garbage frames. A
file without a usable summary (a recorder that was killed) is walked record by record."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from mcap.data_stream import ReadDataStream
from mcap.reader import SeekingReader
from mcap.records import Channel, Chunk, Message, Schema
from mcap.stream_reader import breakup_chunk

from ..refs import MediaError, MediaRef, record_skip
from .storage import MAX_MESSAGE_BYTES, MCAP_MAGIC, reads

_KINDS = {Schema: "schema", Channel: "channel", Message: "message"}


class ChunkError(ValueError):
    """A chunk whose declared size is over the limit or whose data do not match it."""


def _decompressed(chunk: Chunk) -> bytes:
    """The chunk's records, decompressed into at most the size the chunk declares, which is
    checked against MAX_MESSAGE_BYTES first (the ``mcap`` package would allocate any declared
    size up front). Raises ChunkError."""
    size = chunk.uncompressed_size
    if size > MAX_MESSAGE_BYTES:
        raise ChunkError(f"declares {size} bytes uncompressed (over {MAX_MESSAGE_BYTES})")
    if chunk.compression == "":
        data = chunk.data
    elif chunk.compression == "zstd":
        import zstandard  # an optional dependency of mcap: imported when a chunk needs it

        # read in blocks: a frame may declare any content size, only what really comes out is kept
        reader, parts, total = zstandard.ZstdDecompressor().stream_reader(bytes(chunk.data)), [], 0
        while block := reader.read(1 << 20):
            total += len(block)
            if total > size:
                raise ChunkError(f"decompresses past the {size} bytes it declares")
            parts.append(block)
        data = b"".join(parts)
    elif chunk.compression == "lz4":
        import lz4.frame  # optional as well: only lz4-compressed chunks need it

        decompressor = lz4.frame.LZ4FrameDecompressor()
        data = decompressor.decompress(chunk.data, max_length=size + 1)
    else:
        raise ChunkError(f"unknown compression {chunk.compression[:32]!r}")
    if len(data) != size:
        raise ChunkError(f"holds {len(data)} bytes, declares {size}")
    if chunk.uncompressed_crc and zlib.crc32(data) != chunk.uncompressed_crc:
        raise ChunkError("CRC mismatch")
    return data


def chunk_records(chunk: Chunk) -> list:
    """The schema, channel and message records of a chunk, its size bounded and CRC checked."""
    return breakup_chunk(replace(chunk, compression="", data=_decompressed(chunk), uncompressed_crc=0))


def mcap_summary(stream):
    """The file's summary section, or None when it has none or a damaged one."""
    try:
        return SeekingReader(stream).get_summary()
    except Exception:  # noqa: BLE001 - damaged summary: the caller reads the file from the start instead
        return None


def mcap_topics(path: Path) -> dict[str, str]:
    """``{topic: schema name}`` of the file's CDR channels, from the summary (or a walk)."""
    summary, why = None, None
    try:
        with open(path, "rb") as stream:
            summary = SeekingReader(stream).get_summary()
    except Exception as err:  # noqa: BLE001 - the library raises many kinds for a damaged summary
        why = err
    if summary is not None and summary.channels:
        return {c.topic: (summary.schemas[c.schema_id].name if c.schema_id in summary.schemas else "")
                for c in summary.channels.values() if c.message_encoding == "cdr"}
    # No summary (a recorder that was killed) or a damaged one: walk the records.
    topics: dict[str, str] = {}
    schemas: dict[int, str] = {}
    for kind, record in _walk_mcap(path, None):
        if kind == "schema":
            schemas[record.id] = record.name
        elif kind == "channel" and record.message_encoding == "cdr":
            topics[record.topic] = schemas.get(record.schema_id, "")
    if not topics and why is not None:
        raise MediaError(f"{path}: unreadable MCAP ({type(why).__name__}: {why})")
    return topics


def mcap_has_messages(path: Path, topic: str) -> bool | None:
    """Whether ``topic`` has a message in the file, from the summary's statistics (None without
    them: a killed recorder's file, to be read to know)."""
    with open(path, "rb") as stream:
        summary = mcap_summary(stream)
    if summary is None or summary.statistics is None:
        return None
    counts = summary.statistics.channel_message_counts
    return any(counts.get(c.id, 0) for c in summary.channels.values() if c.topic == topic)


def _walk_mcap(path: Path, ref: MediaRef | None):
    """``(kind, record)`` for the schemas, channels and messages of an MCAP read from the start,
    record by record (for files without a usable summary). A corrupt chunk is skipped (counted on
    ``ref``); a record whose length runs past the end of the file ends the walk (truncated)."""
    size = path.stat().st_size
    with open(path, "rb") as stream:
        if stream.read(8) != MCAP_MAGIC:
            raise MediaError(f"{path}: not an MCAP file")
        while True:
            offset = stream.tell()
            head = stream.read(9)
            if len(head) < 9:
                break
            opcode, length = head[0], int.from_bytes(head[1:], "little")
            if length > MAX_MESSAGE_BYTES:
                if ref is not None:
                    record_skip(ref, f"the rest of {path.name}: a record at byte {offset} declares {length} bytes "
                                     f"(over {MAX_MESSAGE_BYTES})")
                break
            if offset + 9 + length > size:
                if ref is not None:
                    record_skip(ref, f"the rest of {path.name}: truncated at byte {offset}")
                break
            if opcode in (0x0F, 0x02):  # data end, footer: the summary follows
                break
            body = stream.read(length)
            try:
                if opcode == 0x03:
                    yield "schema", Schema.read(ReadDataStream(io.BytesIO(body)))
                elif opcode == 0x04:
                    yield "channel", Channel.read(ReadDataStream(io.BytesIO(body)))
                elif opcode == 0x05:
                    yield "message", Message.read(ReadDataStream(io.BytesIO(body)), length)
                elif opcode == 0x06:
                    reads["chunks"] += 1
                    reads["chunk_bytes"] += length
                    for record in chunk_records(Chunk.read(ReadDataStream(io.BytesIO(body)))):
                        kind = _KINDS.get(type(record))
                        if kind:
                            yield kind, record
            except Exception as err:  # noqa: BLE001
                if ref is not None:
                    record_skip(ref, f"a corrupt MCAP record at byte {offset} of {path.name} "
                                     f"({type(err).__name__}: {str(err)[:200]})")


def _walk_messages(path: Path, ref: MediaRef) -> Iterator[tuple[int, str, memoryview]]:
    schemas: dict[int, str] = {}
    channels: dict[int, str] = {}
    for kind, record in _walk_mcap(path, ref):
        if kind == "schema":
            schemas[record.id] = record.name
        elif kind == "channel" and record.topic == ref.topic:
            channels[record.id] = schemas.get(record.schema_id, "")
        elif kind == "message" and record.channel_id in channels:
            yield record.log_time, channels[record.channel_id], memoryview(record.data)


def _topic_chunks(summary, topic: str) -> tuple[dict[int, str], list]:
    """``({channel id: type}, chunk indexes that may hold the topic, by file offset)``."""
    channels = {c.id: summary.schemas[c.schema_id].name if c.schema_id in summary.schemas else ""
                for c in summary.channels.values() if c.topic == topic}
    chunks = [index for index in sorted(summary.chunk_indexes, key=lambda c: c.chunk_start_offset)
              # a chunk without message indexes may hold anything
              if not index.message_index_offsets or set(index.message_index_offsets) & set(channels)]
    return channels, chunks


def _logged_in(log_time: int, start_ns: int | None, stop_ns: int | None) -> bool:
    return (start_ns is None or log_time >= start_ns) and (stop_ns is None or log_time < stop_ns)


def mcap_messages(path: Path, ref: MediaRef, start_ns: int | None = None,
                  stop_ns: int | None = None) -> Iterator[tuple[int, str, memoryview]]:
    """``(log time ns, type, CDR bytes)`` of ``ref.topic`` logged in ``[start_ns, stop_ns)``:
    only the chunks whose time range overlaps the window are read."""
    with open(path, "rb") as stream:
        summary = mcap_summary(stream)
        if summary is None or not summary.chunk_indexes:
            for message in _walk_messages(path, ref):
                if _logged_in(message[0], start_ns, stop_ns):
                    yield message
            return
        channels, chunks = _topic_chunks(summary, ref.topic)
        # The summary's chunk offsets let a damaged chunk be skipped whatever its bytes say.
        for index in chunks:
            if (start_ns is not None and index.message_end_time < start_ns
                    or stop_ns is not None and index.message_start_time >= stop_ns):
                continue  # the chunk's messages all lie outside the window: never read
            try:
                if index.chunk_length > MAX_MESSAGE_BYTES or index.uncompressed_size > MAX_MESSAGE_BYTES:
                    raise ChunkError(f"declares {max(index.chunk_length, index.uncompressed_size)} bytes "
                                     f"(over {MAX_MESSAGE_BYTES})")
                stream.seek(index.chunk_start_offset + 1 + 8)
                reads["chunks"] += 1
                reads["chunk_bytes"] += index.chunk_length
                body = stream.read(index.chunk_length)  # bounded above; Chunk.read trusts its own lengths
                records = chunk_records(Chunk.read(ReadDataStream(io.BytesIO(body))))
            except Exception as err:  # noqa: BLE001 - CRC, decompression or structure: the chunk is lost
                record_skip(ref, f"a corrupt MCAP chunk at byte {index.chunk_start_offset} of {path.name} "
                                 f"({type(err).__name__}: {str(err)[:200]})")
                continue
            for record in records:
                if (isinstance(record, Message) and record.channel_id in channels
                        and _logged_in(record.log_time, start_ns, stop_ns)):
                    yield record.log_time, channels[record.channel_id], memoryview(record.data)


def mcap_span(path: Path, topic: str) -> tuple[bool, tuple[int, int] | None]:
    """``(indexed, span)``: whether the file has a chunk index, and the first and last log time
    (ns) of the chunks that may hold ``topic`` (None without any)."""
    with open(path, "rb") as stream:
        summary = mcap_summary(stream)
    if summary is None or not summary.chunk_indexes:
        return False, None
    chunks = _topic_chunks(summary, topic)[1]
    if not chunks:
        return True, None
    return True, (min(c.message_start_time for c in chunks), max(c.message_end_time for c in chunks))
