"""The keys and bytes of a LangGraph checkpoint inside a checkpointd state.

    m/checkpoint          the checkpoint without its channel values (LangGraph's serializer)
    m/w/<task id>/<idx>   one pending write: a JSON header line, then the serialized value
    v/<channel>           one channel value: its serializer type, a newline, then the bytes
    m/l/<channel>         a channel value that is a list: its length, in decimal
    e/<channel>/<index>   one element of that list (index in 8 digits), encoded as a value

Everything small and read together sits under "m/", so reading the "m/" prefix gives a
checkpoint's channel versions, list lengths and pending writes without its values.

A list (a message history, most often) is stored element by element because it grows by
appends: each element is an entry of its own, so a new checkpoint stores only the elements that
are new. Stored whole, every append would rewrite the value's first chunk (the serialized list
starts with its length) as well as its last.
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
LIST_PREFIX = "m/l/"
ELEMENT_PREFIX = "e/"
SMALL_PREFIX = "m/"
# Lists longer than this are stored whole: past it the entries would cost more catalog rows
# than an append saves (a message history this long is rare; any length reads back the same).
MAX_LIST_ELEMENTS = 16_384


def value_key(channel: str) -> str:
    return VALUE_PREFIX + channel


def length_key(channel: str) -> str:
    return LIST_PREFIX + channel


def element_key(channel: str, index: int) -> str:
    return f"{ELEMENT_PREFIX}{channel}/{index:08d}"


def value_entries(serde: SerializerProtocol, channel: str, value: Any) -> dict[str, bytes]:
    """The entries that hold one channel value: one, or a list's length and elements."""
    if type(value) is not list or len(value) > MAX_LIST_ELEMENTS:
        return {value_key(channel): encode_value(serde, value)}
    entries = {length_key(channel): str(len(value)).encode()}
    for index, element in enumerate(value):
        entries[element_key(channel, index)] = encode_value(serde, element)
    return entries


def stored_keys(channel: str, length: int | None) -> list[str]:
    """The keys holding a channel's value: stored whole (`length` None) or as a list."""
    if length is None:
        return [value_key(channel)]
    return [length_key(channel)] + [element_key(channel, i) for i in range(length)]


def list_lengths(entries: dict[str, bytes]) -> dict[str, int]:
    """The length of every channel value stored as a list among `entries`."""
    found = {}
    for key, blob in entries.items():
        if key.startswith(LIST_PREFIX):
            found[key[len(LIST_PREFIX) :]] = int(blob)
    return found


def read_value(
    serde: SerializerProtocol, channel: str, entries: dict[str, bytes]
) -> tuple[bool, Any]:
    """(True, the channel's value) from a state's entries, or (False, None) when it has none."""
    blob = entries.get(value_key(channel))
    if blob is not None:
        return True, decode_value(serde, blob)
    length = entries.get(length_key(channel))
    if length is None:
        return False, None
    keys = (element_key(channel, i) for i in range(int(length)))
    return True, [decode_value(serde, entries[key]) for key in keys]


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
