"""Every call the client makes, as data: the RPC's name, its request and how to read the answer.

`Client` and `AsyncClient` only execute these, so the two share every request and parser, and
code that plans several calls (the LangGraph checkpointer) can be written once for both.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from checkpointd._pb import checkpoint_pb2 as pb
from checkpointd.types import (
    Branch,
    Change,
    Checkpoint,
    Delete,
    DiffEntry,
    Put,
    Session,
    State,
    to_timestamp,
)

T = TypeVar("T")

# A create whose changes weigh more than this goes as a client stream (UploadCheckpoint)
# instead of one message: the server's smallest message limit is 4 MiB, and the Rust client
# streams from 2 MiB too.
UNARY_CREATE_MAX_BYTES = 2 * 1024 * 1024
# Value bytes per `data` message of an upload.
UPLOAD_PIECE_BYTES = 1024 * 1024

_DIFF_KINDS = {
    pb.DIFF_KIND_ADDED: "added",
    pb.DIFF_KIND_REMOVED: "removed",
    pb.DIFF_KIND_MODIFIED: "modified",
}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One RPC to make. `shape` is "unary", "server_stream" (parse gets every message, in order)
    or "client_stream" (request is a sequence of messages)."""

    method: str
    request: Any
    parse: Callable[[Any], T]
    shape: str = "unary"
    # Safe to send again when the connection failed: the server recognises a repeat (a create
    # carries a request id) and answers it with what the first one did.
    retry_unavailable: bool = False


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; `next_page_token` is empty on the last page."""

    items: list[T]
    next_page_token: str


def create(
    session_id: str,
    changes: Sequence[Change],
    *,
    parent_id: str | None = None,
    branch: str = "main",
    metadata: dict[str, Any] | None = None,
    message: str = "",
    incremental: bool = False,
    request_id: str | None = None,
    lease_token: int = 0,
) -> Call[Checkpoint]:
    """A new checkpoint on `branch`, after `parent_id` (its head). Full: `changes` are puts and
    are the whole state. Incremental: the parent's state with `changes` applied in order.

    The create carries `request_id` (a fresh one when not given), so the client may send it
    again when the connection fails: a repeat of a create that committed returns the same
    checkpoint. `lease_token` is the token of a lease held on the branch, if any."""
    if incremental and not parent_id:
        raise ValueError("create: an incremental checkpoint needs parent_id")
    mode = pb.CREATE_MODE_INCREMENTAL if incremental else pb.CREATE_MODE_FULL
    meta = json.dumps(metadata or {}, separators=(",", ":"))
    request_id = request_id or str(uuid.uuid4())
    size = sum(len(c.value) + len(c.key) for c in changes if isinstance(c, Put))
    if size > UNARY_CREATE_MAX_BYTES:
        header = pb.UploadHeader(
            session_id=session_id,
            branch=branch,
            parent_id=parent_id or "",
            metadata=meta,
            message=message,
            mode=mode,
            request_id=request_id,
            lease_token=lease_token,
        )
        return _upload(header, changes)
    request = pb.CreateCheckpointRequest(
        session_id=session_id,
        branch=branch,
        parent_id=parent_id or "",
        metadata=meta,
        message=message,
        mode=mode,
        changes=[_change(c) for c in changes],
        request_id=request_id,
        lease_token=lease_token,
    )
    return Call("CreateCheckpoint", request, _created, retry_unavailable=True)


def _created(response: Any) -> Checkpoint:
    return Checkpoint.from_proto(response.checkpoint)


def _upload(header: Any, changes: Sequence[Change]) -> Call[Checkpoint]:
    parts = [pb.UploadCheckpointRequest(header=header)]
    for change in changes:
        if isinstance(change, Delete):
            parts.append(pb.UploadCheckpointRequest(delete=change.key))
            continue
        entry = pb.EntryHeader(key=change.key, size=len(change.value))
        parts.append(pb.UploadCheckpointRequest(put=entry))
        for start in range(0, len(change.value), UPLOAD_PIECE_BYTES):
            piece = change.value[start : start + UPLOAD_PIECE_BYTES]
            parts.append(pb.UploadCheckpointRequest(data=piece))
    commit = pb.UploadCommit(change_count=len(changes))
    parts.append(pb.UploadCheckpointRequest(commit=commit))
    return Call("UploadCheckpoint", parts, _created, shape="client_stream", retry_unavailable=True)


def _change(change: Change) -> Any:
    if isinstance(change, Put):
        return pb.Change(put=pb.Entry(key=change.key, value=change.value))
    return pb.Change(delete=change.key)


def get_checkpoint(checkpoint_id: str) -> Call[Checkpoint]:
    request = pb.GetCheckpointRequest(checkpoint_id=checkpoint_id)
    return Call("GetCheckpoint", request, Checkpoint.from_proto)


def read_state(
    checkpoint_id: str | None = None,
    *,
    session_id: str | None = None,
    branch: str = "main",
    prefix: str = "",
    keys: Iterable[str] = (),
) -> Call[State]:
    """A checkpoint's state: by id, or the head of `branch` of `session_id`. `prefix` or `keys`
    narrow it (missing keys are skipped)."""
    if (checkpoint_id is None) == (session_id is None):
        raise ValueError("read_state: give either checkpoint_id or session_id")
    request = pb.ReadStateRequest(prefix=prefix, keys=list(keys), batch_entries=True)
    if checkpoint_id is not None:
        request.checkpoint_id = checkpoint_id
    else:
        request.head.CopyFrom(pb.BranchHead(session_id=session_id, branch=branch))
    return Call("ReadState", request, _assemble_state, shape="server_stream")


def _assemble_state(parts: list[Any]) -> State:
    """Puts a ReadState stream back together: the checkpoint, then whole entries or headers
    followed by their data pieces."""
    if not parts or parts[0].WhichOneof("part") != "checkpoint":
        raise ValueError("ReadState: the stream did not start with the checkpoint")
    entries: dict[str, bytes] = {}
    key: str | None = None
    value = bytearray()
    for part in parts[1:]:
        kind = part.WhichOneof("part")
        if kind == "data" and key is not None:
            value += part.data
            continue
        if key is not None:
            entries[key] = bytes(value)
            key = None
        if kind == "entries":
            entries.update((e.key, e.value) for e in part.entries.entries)
        elif kind == "entry":
            key, value = part.entry.key, bytearray()
        else:
            raise ValueError(f"ReadState: unexpected {kind!r} part")
    if key is not None:
        entries[key] = bytes(value)
    return State(Checkpoint.from_proto(parts[0].checkpoint), entries)


def list_checkpoints(
    session_id: str,
    *,
    branch: str = "",
    metadata_contains: dict[str, Any] | None = None,
    message_contains: str = "",
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    page_size: int = 1000,
    page_token: str = "",
) -> Call[Page[Checkpoint]]:
    """A page of a session's checkpoints, newest first; filters combine. `metadata_contains`
    uses PostgreSQL jsonb containment (`@>`) on every catalog."""
    request = pb.ListCheckpointsRequest(
        session_id=session_id,
        branch=branch,
        page_size=page_size,
        page_token=page_token,
        metadata_contains=json.dumps(metadata_contains) if metadata_contains else "",
        message_contains=message_contains,
    )
    if created_after is not None:
        request.created_after.CopyFrom(to_timestamp(created_after))
    if created_before is not None:
        request.created_before.CopyFrom(to_timestamp(created_before))
    return Call("ListCheckpoints", request, _checkpoint_page)


def _checkpoint_page(response: Any) -> Page[Checkpoint]:
    items = [Checkpoint.from_proto(c) for c in response.checkpoints]
    return Page(items, response.next_page_token)


def list_sessions(page_size: int = 1000, page_token: str = "") -> Call[Page[Session]]:
    request = pb.ListSessionsRequest(page_size=page_size, page_token=page_token)
    return Call("ListSessions", request, _session_page)


def _session_page(response: Any) -> Page[Session]:
    return Page([Session.from_proto(s) for s in response.sessions], response.next_page_token)


def get_session(session_id: str) -> Call[Session]:
    request = pb.GetSessionRequest(session_id=session_id)
    return Call("GetSession", request, Session.from_proto)


def delete_checkpoint(checkpoint_id: str) -> Call[None]:
    request = pb.DeleteCheckpointRequest(checkpoint_id=checkpoint_id)
    return Call("DeleteCheckpoint", request, lambda _: None)


def delete_session(session_id: str) -> Call[int]:
    """Deletes a session; answers how many checkpoints went with it."""
    request = pb.DeleteSessionRequest(session_id=session_id)
    return Call("DeleteSession", request, lambda r: r.checkpoints_deleted)


def create_branch(session_id: str, name: str, from_checkpoint_id: str) -> Call[Branch]:
    request = pb.CreateBranchRequest(
        session_id=session_id, name=name, from_checkpoint_id=from_checkpoint_id
    )
    return Call("CreateBranch", request, Branch.from_proto)


def get_branch(session_id: str, name: str) -> Call[Branch]:
    request = pb.GetBranchRequest(session_id=session_id, name=name)
    return Call("GetBranch", request, Branch.from_proto)


def list_branches(session_id: str) -> Call[list[Branch]]:
    request = pb.ListBranchesRequest(session_id=session_id)
    return Call("ListBranches", request, lambda r: [Branch.from_proto(b) for b in r.branches])


def reset_branch(
    session_id: str, name: str, checkpoint_id: str, expected_head: str
) -> Call[Branch]:
    """Moves a branch to any checkpoint of its session if its head is still `expected_head`."""
    request = pb.ResetBranchRequest(
        session_id=session_id,
        name=name,
        checkpoint_id=checkpoint_id,
        expected_head=expected_head,
    )
    return Call("ResetBranch", request, Branch.from_proto)


def delete_branch(session_id: str, name: str, expected_head: str = "") -> Call[None]:
    request = pb.DeleteBranchRequest(session_id=session_id, name=name, expected_head=expected_head)
    return Call("DeleteBranch", request, lambda _: None)


def fork_session(checkpoint_id: str, new_session_id: str, message: str = "") -> Call[Checkpoint]:
    """A new session whose `main` holds the state of `checkpoint_id`; nothing is copied."""
    request = pb.ForkSessionRequest(
        checkpoint_id=checkpoint_id, new_session_id=new_session_id, message=message
    )
    return Call("ForkSession", request, Checkpoint.from_proto)


def diff(
    from_checkpoint_id: str,
    to_checkpoint_id: str,
    *,
    include_values: bool = False,
    page_size: int = 1000,
    page_token: str = "",
) -> Call[Page[DiffEntry]]:
    """A page of the keys added, removed or modified from one checkpoint to another."""
    request = pb.DiffRequest(
        from_checkpoint_id=from_checkpoint_id,
        to_checkpoint_id=to_checkpoint_id,
        include_values=include_values,
        page_size=page_size,
        page_token=page_token,
    )

    def parse(response: Any) -> Page[DiffEntry]:
        items = [_diff_entry(e, include_values) for e in response.entries]
        return Page(items, response.next_page_token)

    return Call("Diff", request, parse)


def _diff_entry(msg: Any, with_values: bool) -> DiffEntry:
    kind = _DIFF_KINDS.get(msg.kind)
    if kind is None:
        raise ValueError(f"Diff: unknown kind {msg.kind} for key {msg.key!r}")
    if not with_values:
        return DiffEntry(msg.key, kind)
    old = msg.old_value if kind != "added" else None
    new = msg.new_value if kind != "removed" else None
    return DiffEntry(msg.key, kind, old, new)


def search(
    query: str, *, session_id: str = "", page_size: int = 1000, page_token: str = ""
) -> Call[Page[Checkpoint]]:
    """Checkpoints whose message, metadata values or written keys hold every word of `query`."""
    request = pb.SearchRequest(
        session_id=session_id, query=query, page_size=page_size, page_token=page_token
    )
    return Call("Search", request, _checkpoint_page)
