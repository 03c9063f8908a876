"""The keys and bytes of a LangGraph checkpoint inside a checkpointd state.

    m/checkpoint          the checkpoint without its channel values (LangGraph's serializer)
    m/w/<task id>/<idx>   one pending write: a JSON header line, then the serialized value
    v/<channel>           one channel value: its serializer type, a newline, then the bytes

Everything small and read together sits under "m/", so reading the "m/" prefix gives a
checkpoint's channel versions and pending writes without its (possibly large) values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import WRITES_IDX_MAP, PendingWrite, writes_sort_key
from langgraph.checkpoint.serde.base import SerializerProtocol

DOC_KEY = "m/checkpoint"
WRITE_PREFIX = "m/w/"
VALUE_PREFIX = "v/"
SMALL_PREFIX = "m/"


def value_key(channel: str) -> str:
    return VALUE_PREFIX + channel


def write_key(task_id: str, idx: int) -> str:
    # The index is last and always an integer, so the key names one (task, idx) pair only.
    return f"{WRITE_PREFIX}{task_id}/{idx}"


def write_index(channel: str, position: int) -> int:
    """LangGraph's index for a write: special channels (errors, interrupts...) have fixed
    negative ones, so writing them again replaces them."""
    return WRITES_IDX_MAP.get(channel, position)


def encode_value(serde: SerializerProtocol, value: Any) -> bytes:
    kind, data = serde.dumps_typed(value)
    return kind.encode() + b"\n" + data


def decode_value(serde: SerializerProtocol, blob: bytes) -> Any:
    kind, sep, data = blob.partition(b"\n")
    if not sep:
        raise ValueError("checkpointd: a stored value has no type line")
    return serde.loads_typed((kind.decode(), data))


@dataclass(frozen=True)
class StoredWrite:
    """A pending write as stored: enough to sort it as LangGraph replays writes."""

    task_id: str
    idx: int
    channel: str
    task_path: str
    value: Any

    def sort_key(self) -> tuple[str, str, int]:
        return writes_sort_key(self.task_path, self.task_id, self.idx)

    def pending(self) -> PendingWrite:
        return (self.task_id, self.channel, self.value)


def encode_write(
    serde: SerializerProtocol, task_id: str, idx: int, channel: str, task_path: str, value: Any
) -> bytes:
    kind, data = serde.dumps_typed(value)
    header = {"task": task_id, "idx": idx, "channel": channel, "path": task_path, "type": kind}
    # json.dumps escapes newlines inside strings, so the first newline ends the header.
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + data


def decode_write(serde: SerializerProtocol, blob: bytes) -> StoredWrite:
    line, sep, data = blob.partition(b"\n")
    if not sep:
        raise ValueError("checkpointd: a stored pending write has no header line")
    header = json.loads(line)
    value = serde.loads_typed((header["type"], data))
    return StoredWrite(header["task"], header["idx"], header["channel"], header["path"], value)


def sorted_writes(serde: SerializerProtocol, entries: dict[str, bytes]) -> list[PendingWrite]:
    """The pending writes among `entries`, in LangGraph's replay order."""
    stored = [decode_write(serde, v) for k, v in entries.items() if k.startswith(WRITE_PREFIX)]
    stored.sort(key=StoredWrite.sort_key)
    return [w.pending() for w in stored]
