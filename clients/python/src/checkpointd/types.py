"""The client's own types, built from the wire messages once and validated there."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp


@dataclass(frozen=True)
class Summary:
    """What a checkpoint holds and what it cost."""

    # Keys in the state.
    entry_count: int
    # Sum of the value sizes, uncompressed.
    logical_bytes: int
    # Bytes this checkpoint added to storage; 0 when everything was deduplicated.
    stored_bytes: int


@dataclass(frozen=True)
class Checkpoint:
    """An immutable checkpoint: its identity, place in the history, metadata and summary."""

    id: str
    session_id: str
    branch: str
    # First parent first; empty for the first checkpoint of a line.
    parent_ids: tuple[str, ...]
    create_time: datetime
    metadata: dict[str, Any]
    message: str
    summary: Summary
    # Position in the session's commit order, from 1.
    sequence: int

    @classmethod
    def from_proto(cls, msg: Any) -> Checkpoint:
        return cls(
            id=msg.id,
            session_id=msg.session_id,
            branch=msg.branch,
            parent_ids=tuple(msg.parent_ids),
            create_time=to_datetime(msg.create_time),
            metadata=json.loads(msg.metadata) if msg.metadata else {},
            message=msg.message,
            summary=Summary(
                entry_count=msg.summary.entry_count,
                logical_bytes=msg.summary.logical_bytes,
                stored_bytes=msg.summary.stored_bytes,
            ),
            sequence=msg.sequence,
        )


@dataclass(frozen=True)
class Branch:
    """A named pointer to a checkpoint of a session."""

    session_id: str
    name: str
    head: str

    @classmethod
    def from_proto(cls, msg: Any) -> Branch:
        return cls(session_id=msg.session_id, name=msg.name, head=msg.head)


@dataclass(frozen=True)
class Session:
    """A session and how many checkpoints it holds."""

    id: str
    checkpoint_count: int

    @classmethod
    def from_proto(cls, msg: Any) -> Session:
        return cls(id=msg.id, checkpoint_count=msg.checkpoint_count)


@dataclass(frozen=True)
class Put:
    """Sets `key` to `value` in a new checkpoint."""

    key: str
    value: bytes


@dataclass(frozen=True)
class Delete:
    """Removes `key` from the parent's state (incremental creates only)."""

    key: str


Change = Put | Delete


@dataclass(frozen=True)
class DiffEntry:
    """A key that differs between two checkpoints; values only when asked for."""

    key: str
    # "added", "removed" or "modified".
    kind: str
    old_value: bytes | None = None
    new_value: bytes | None = None


@dataclass(frozen=True)
class State:
    """A checkpoint and (part of) its state, in key order."""

    checkpoint: Checkpoint
    entries: dict[str, bytes] = field(default_factory=dict)


def to_datetime(ts: Timestamp) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)


def to_timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(timezone.utc))
    return ts
