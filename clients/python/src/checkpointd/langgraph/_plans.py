"""The checkpointer's reads and writes, written once for blocking and asyncio use (deleting,
pruning and copying threads are in `_admin`).

Each operation is a generator (a "plan") that yields the calls it needs (`checkpointd._calls.Call`)
or a `Sleep`, and receives each call's answer, or has the call's error raised where it yielded.
`checkpointd.langgraph.saver` runs plans with `Client` or `AsyncClient`. README.md beside the
package says how LangGraph's checkpoints map onto checkpointd's; the short version:

- a thread is a session, a namespace a branch (`_names`);
- each LangGraph checkpoint is a checkpointd checkpoint whose state is the LangGraph checkpoint
  (`_codec`), written incrementally on the previous head of its branch, so channel values that
  did not change are neither sent nor stored again;
- checkpoints are immutable, so pending writes make a new checkpointd checkpoint holding the
  same LangGraph checkpoint plus the writes: a *version* of it. The newest version wins.
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from threading import Lock
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from checkpointd import _calls as calls
from checkpointd.errors import Aborted, AlreadyExists, NotFound
from checkpointd.langgraph import _codec as codec
from checkpointd.langgraph._names import branch_for, session_for, side_branch_for, thread_for
from checkpointd.types import Change, Checkpoint, Delete, Put, State

T = TypeVar("T")
Plan = Generator[Any, Any, T]

# The checkpointd metadata member that records which LangGraph checkpoint a checkpointd
# checkpoint holds: {"id": checkpoint id, "ns": namespace, "parent": parent id or null}.
# LangGraph never copies configurable keys starting with "__" into metadata, so it cannot clash.
BOOK_KEY = "__checkpointd"

# Writes retried after the branch moved under them (another writer committed first).
MAX_ATTEMPTS = 16

# Versions whose contents (channel versions and write keys) are remembered per saver.
KNOWN_VERSIONS = 4096


@dataclass(frozen=True)
class Sleep:
    """Asks the driver to wait before the plan goes on."""

    seconds: float


def _backoff(attempt: int) -> Sleep:
    """A pause before retrying a write that lost a race: random (so writers that collided do
    not collide again in step) and growing, up to a quarter of a second."""
    return Sleep(random.uniform(0, min(0.002 * 2**attempt, 0.25)))


class ConflictError(RuntimeError):
    """A write kept losing the race for its branch's head."""


class NotFoundError(LookupError):
    """Pending writes named a checkpoint that does not exist."""


@dataclass(frozen=True)
class Version:
    """A checkpointd checkpoint holding a version of a LangGraph checkpoint."""

    id: str
    sequence: int
    lg_id: str
    ns: str
    parent_lg_id: str | None
    # The checkpointd metadata: LangGraph's metadata plus BOOK_KEY.
    metadata: dict[str, Any]

    @classmethod
    def of(cls, cp: Checkpoint) -> Version | None:
        """The version `cp` holds, or None when no LangGraph checkpointer wrote it."""
        book = cp.metadata.get(BOOK_KEY)
        if not isinstance(book, dict) or not isinstance(book.get("id"), str):
            return None
        ns, parent = book.get("ns", ""), book.get("parent")
        return cls(cp.id, cp.sequence, book["id"], ns, parent, cp.metadata)


@dataclass(frozen=True)
class Contents:
    """What an incremental write on top of a version must know about it."""

    channel_versions: ChannelVersions
    write_keys: frozenset[str]
    # Channels whose value is stored as a list (see _codec), and their lengths.
    list_lengths: dict[str, int]


class Context:
    """What plans share: the serializer, naming, and what this saver learned about heads and
    versions. Heads are hints (every write checks them by compare-and-swap); versions are
    immutable, so what is remembered about one stays true."""

    def __init__(self, serde: SerializerProtocol, session_prefix: str, poll_seconds: float):
        self.serde = serde
        self.session_prefix = session_prefix
        # How long put_writes waits for the checkpoint it names to appear: LangGraph may save
        # a task's writes before the checkpoint's own save has finished.
        self.poll_seconds = poll_seconds
        self._lock = Lock()
        self._heads: dict[tuple[str, str], str | None] = {}
        self._known: OrderedDict[str, tuple[Version, Contents]] = OrderedDict()

    def session(self, thread_id: Any) -> str:
        return session_for(str(thread_id), self.session_prefix)

    def head_hint(self, session: str, branch: str) -> tuple[bool, str | None]:
        with self._lock:
            key = (session, branch)
            return key in self._heads, self._heads.get(key)

    def set_head(self, session: str, branch: str, head: str | None) -> None:
        with self._lock:
            self._heads[(session, branch)] = head

    def learn_head(self, session: str, branch: str, err: Exception) -> None:
        """After a refused write: the head the error names, or ask the server next time."""
        head = getattr(err, "current_head", None)
        with self._lock:
            if head is not None:
                self._heads[(session, branch)] = head
            else:
                self._heads.pop((session, branch), None)

    def forget_heads(self, session: str) -> None:
        with self._lock:
            for key in [k for k in self._heads if k[0] == session]:
                del self._heads[key]

    def known(self, checkpoint_id: str | None) -> tuple[Version, Contents] | None:
        with self._lock:
            return self._known.get(checkpoint_id) if checkpoint_id else None

    def remember(self, version: Version, contents: Contents) -> None:
        with self._lock:
            self._known[version.id] = (version, contents)
            while len(self._known) > KNOWN_VERSIONS:
                self._known.popitem(last=False)


# ---- reading ----------------------------------------------------------------------------


def get_tuple(ctx: Context, config: RunnableConfig) -> Plan[CheckpointTuple | None]:
    """The checkpoint `config` names, or the newest of its namespace; None when absent."""
    conf = config["configurable"]
    thread, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
    session = ctx.session(thread)
    lg_id = conf.get("checkpoint_id")
    try:
        if lg_id:
            version = yield from newest_version(ctx, session, ns, lg_id)
            if version is None:
                return None
            state = yield calls.read_state(version.id)
        else:
            state = yield calls.read_state(session_id=session, branch=branch_for(ns))
    except NotFound:
        return None
    return to_tuple(ctx, thread, state)


def read_tuple(ctx: Context, thread: str, version: Version) -> Plan[CheckpointTuple | None]:
    """A listed version as a tuple; None when it was deleted since it was listed."""
    try:
        state = yield calls.read_state(version.id)
    except NotFound:
        return None
    return to_tuple(ctx, thread, state)


def to_tuple(ctx: Context, thread: str, state: State) -> CheckpointTuple:
    version = Version.of(state.checkpoint)
    if version is None:
        raise ValueError(f"checkpointd: checkpoint {state.checkpoint.id} holds no LangGraph data")
    doc = codec.decode_value(ctx.serde, state.entries[codec.DOC_KEY])
    values = {}
    for channel in doc["channel_versions"]:
        found, value = codec.read_value(ctx.serde, channel, state.entries)
        if found:
            values[channel] = value
    metadata = {k: v for k, v in version.metadata.items() if k != BOOK_KEY}
    parent = None
    if version.parent_lg_id:
        parent = _config(thread, version.ns, version.parent_lg_id)
    return CheckpointTuple(
        config=_config(thread, version.ns, version.lg_id),
        checkpoint={**doc, "channel_values": values},
        metadata=metadata,  # type: ignore[typeddict-item]
        parent_config=parent,
        pending_writes=codec.sorted_writes(ctx.serde, state.entries),
    )


def _config(thread: str, ns: str, lg_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": lg_id}}


def list_versions(
    ctx: Context,
    config: RunnableConfig | None,
    *,
    filter: dict[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
) -> Plan[list[tuple[str, Version]]]:
    """(thread, newest version) of every checkpoint matching, newest LangGraph id first.

    The metadata filter and the namespace are checkpointd's `metadata_contains` (jsonb
    containment, as LangGraph's Postgres checkpointer filters); ordering by LangGraph id, `before`
    and `limit` are applied here, after every match of the thread was listed."""
    conf = (config or {}).get("configurable", {})
    contains = dict(filter or {})
    book = {}
    if conf.get("checkpoint_ns") is not None:
        book["ns"] = conf["checkpoint_ns"]
    if conf.get("checkpoint_id"):
        book["id"] = conf["checkpoint_id"]
    if book:
        contains[BOOK_KEY] = book
    before_id = (before or {}).get("configurable", {}).get("checkpoint_id")

    if "thread_id" in conf:
        sessions = [ctx.session(conf["thread_id"])]
    else:
        sessions = yield from _our_sessions(ctx)
    found: list[tuple[str, Version]] = []
    for session in sessions:
        versions = yield from newest_versions(session, contains)
        thread = thread_for(session, ctx.session_prefix) or session
        found.extend((thread, v) for v in versions if not before_id or v.lg_id < before_id)
    found.sort(key=lambda item: item[1].lg_id, reverse=True)
    return found[:limit] if limit is not None else found


def _our_sessions(ctx: Context) -> Plan[list[str]]:
    sessions, token = [], ""
    while True:
        page = yield calls.list_sessions(page_token=token)
        sessions.extend(
            s.id for s in page.items if thread_for(s.id, ctx.session_prefix) is not None
        )
        token = page.next_page_token
        if not token:
            return sessions


def newest_versions(session: str, contains: dict[str, Any]) -> Plan[list[Version]]:
    """The newest version of each LangGraph checkpoint of `session` matching `contains`."""
    newest: dict[tuple[str, str], Version] = {}
    token = ""
    while True:
        call = calls.list_checkpoints(session, metadata_contains=contains, page_token=token)
        try:
            page = yield call
        except NotFound:
            return []
        for cp in page.items:
            version = Version.of(cp)
            # Listed newest first, so the first one seen of each checkpoint is its newest.
            if version is not None:
                newest.setdefault((version.ns, version.lg_id), version)
        token = page.next_page_token
        if not token:
            return list(newest.values())


def newest_version(ctx: Context, session: str, ns: str, lg_id: str) -> Plan[Version | None]:
    """The newest checkpointd checkpoint holding LangGraph checkpoint `lg_id`, on any branch."""
    contains = {BOOK_KEY: {"id": lg_id, "ns": ns}}
    try:
        page = yield calls.list_checkpoints(session, metadata_contains=contains, page_size=1)
    except NotFound:
        return None
    return Version.of(page.items[0]) if page.items else None


def _version_for_write(ctx: Context, session: str, ns: str, lg_id: str) -> Plan[Version | None]:
    """Like `newest_version`, but first trusts this saver's hint of the branch head: a write
    built on a stale hint fails its compare-and-swap and is retried from the server's view."""
    _, head = ctx.head_hint(session, branch_for(ns))
    known = ctx.known(head)
    if known is not None and known[0].lg_id == lg_id:
        return known[0]
    version = yield from newest_version(ctx, session, ns, lg_id)
    return version


def contents_of(ctx: Context, version: Version) -> Plan[Contents]:
    known = ctx.known(version.id)
    if known is not None:
        return known[1]
    state = yield calls.read_state(version.id, prefix=codec.SMALL_PREFIX)
    doc = codec.decode_value(ctx.serde, state.entries[codec.DOC_KEY])
    writes = frozenset(k for k in state.entries if k.startswith(codec.WRITE_PREFIX))
    lengths = codec.list_lengths(state.entries)
    contents = Contents(dict(doc["channel_versions"]), writes, lengths)
    ctx.remember(version, contents)
    return contents


# ---- writing ----------------------------------------------------------------------------


def put(
    ctx: Context,
    config: RunnableConfig,
    checkpoint: dict[str, Any],
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> Plan[RunnableConfig]:
    """Stores a checkpoint as the new head of its namespace's branch.

    The state is built on the newest version of the checkpoint's LangGraph parent: only the
    channels in `new_versions` are sent; the parent's pending writes are dropped. When the
    branch head is not that parent (a fork from an older checkpoint, or another writer), the
    difference between the head and the parent is applied too, so that one atomic create
    always yields exactly the new checkpoint."""
    conf = config["configurable"]
    thread, ns, parent = (
        str(conf["thread_id"]),
        conf.get("checkpoint_ns", ""),
        conf.get("checkpoint_id"),
    )
    session, branch = ctx.session(thread), branch_for(ns)
    book = {"id": checkpoint["id"], "ns": ns, "parent": parent}
    stored_meta = {**_json_metadata(config, metadata), BOOK_KEY: book}
    doc = {k: v for k, v in checkpoint.items() if k != "channel_values"}
    values = checkpoint["channel_values"]

    for attempt in range(MAX_ATTEMPTS):
        head = yield from _head(ctx, session, branch)
        base = None
        if parent:
            base = yield from _version_for_write(ctx, session, ns, parent)
        try:
            if base is None:
                changes, lengths = _full_state(ctx, doc, values)
                call = calls.create(
                    session, changes, parent_id=head, branch=branch, metadata=stored_meta
                )
            else:
                planned = yield from _changes_on_head(ctx, head, base, doc, values, new_versions)
                changes, lengths = planned
                incremental = head is not None
                call = calls.create(
                    session,
                    changes,
                    parent_id=head,
                    branch=branch,
                    metadata=stored_meta,
                    incremental=incremental,
                )
            created = yield call
        except (Aborted, AlreadyExists, NotFound) as err:
            # The branch moved, appeared or went, or the base was deleted: look again.
            ctx.learn_head(session, branch, err)
            yield _backoff(attempt)
            continue
        version = Version.of(created)
        assert version is not None
        ctx.remember(version, Contents(dict(doc["channel_versions"]), frozenset(), lengths))
        ctx.set_head(session, branch, created.id)
        return _config(thread, ns, checkpoint["id"])
    raise ConflictError(
        f"checkpointd: put of checkpoint {checkpoint['id']} in thread {thread!r} namespace {ns!r} "
        f"lost the race for branch {branch} {MAX_ATTEMPTS} times"
    )


def _changes_on_head(
    ctx: Context,
    head: str | None,
    base: Version,
    doc: dict[str, Any],
    values: dict[str, Any],
    new_versions: ChannelVersions,
) -> Plan[tuple[list[Change], dict[str, int]]]:
    """The changes that turn the head's state into the new checkpoint built on `base`, and the
    new checkpoint's list lengths."""
    contents = yield from contents_of(ctx, base)
    ops: dict[str, Change] = {}
    if head is None:
        # The branch is gone (its checkpoints were deleted by run): a full state from the base,
        # without its pending writes.
        state = yield calls.read_state(base.id)
        kept = (k for k in state.entries if not k.startswith(codec.WRITE_PREFIX))
        ops.update((k, Put(k, state.entries[k])) for k in kept)
    elif head != base.id:
        ops.update((yield from diff_ops(head, base.id)))
    delta, lengths = _delta(ctx, contents, doc, values, new_versions)
    ops.update(delta)
    if head is None:
        return [op for op in ops.values() if isinstance(op, Put)], lengths
    return list(ops.values()), lengths


def diff_ops(from_id: str, to_id: str) -> Plan[dict[str, Change]]:
    """Puts and deletes turning checkpoint `from_id`'s state into `to_id`'s."""
    ops: dict[str, Change] = {}
    token = ""
    while True:
        page = yield calls.diff(from_id, to_id, include_values=True, page_token=token)
        for entry in page.items:
            if entry.kind == "removed":
                ops[entry.key] = Delete(entry.key)
            else:
                ops[entry.key] = Put(entry.key, entry.new_value or b"")
        token = page.next_page_token
        if not token:
            return ops


def _delta(
    ctx: Context,
    base: Contents,
    doc: dict[str, Any],
    values: dict[str, Any],
    new_versions: ChannelVersions,
) -> tuple[dict[str, Change], dict[str, int]]:
    """The changes from a base checkpoint to the new one: the new document, the channels whose
    version moved, no channel the new one lacks, and none of the base's pending writes. Also
    the new checkpoint's list lengths."""
    ops: dict[str, Change] = {codec.DOC_KEY: Put(codec.DOC_KEY, codec.encode_value(ctx.serde, doc))}
    ops.update((key, Delete(key)) for key in base.write_keys)
    lengths = dict(base.list_lengths)
    versions = doc["channel_versions"]
    for channel in base.channel_versions:
        if channel not in versions:
            gone = codec.stored_keys(channel, lengths.pop(channel, None))
            ops.update((k, Delete(k)) for k in gone)
    for channel, version in versions.items():
        if channel not in new_versions and base.channel_versions.get(channel) == version:
            continue  # unchanged: the base's value stays, neither sent nor stored again
        # A channel with a version but no value (e.g. emptied) has no entries.
        new = codec.value_entries(ctx.serde, channel, values[channel]) if channel in values else {}
        old_keys = codec.stored_keys(channel, lengths.pop(channel, None))
        ops.update((k, Delete(k)) for k in old_keys if k not in new)
        # Every element of a list is sent; those the base holds already cost no storage.
        ops.update((k, Put(k, blob)) for k, blob in new.items())
        if codec.length_key(channel) in new:
            lengths[channel] = len(values[channel])
    return ops, lengths


def _full_state(
    ctx: Context, doc: dict[str, Any], values: dict[str, Any]
) -> tuple[list[Change], dict[str, int]]:
    changes: list[Change] = [Put(codec.DOC_KEY, codec.encode_value(ctx.serde, doc))]
    lengths = {}
    for channel in doc["channel_versions"]:
        if channel not in values:
            continue
        entries = codec.value_entries(ctx.serde, channel, values[channel])
        changes.extend(Put(k, blob) for k, blob in entries.items())
        if codec.length_key(channel) in entries:
            lengths[channel] = len(values[channel])
    return changes, lengths


def _json_metadata(config: RunnableConfig, metadata: CheckpointMetadata) -> dict[str, Any]:
    meta = get_serializable_checkpoint_metadata(config, metadata)
    try:
        return json.loads(json.dumps(meta))
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpointd: checkpoint metadata must be JSON: {err}") from None


def _head(ctx: Context, session: str, branch: str) -> Plan[str | None]:
    """The branch's head: this saver's hint, or the server's answer when it has none."""
    hinted, head = ctx.head_hint(session, branch)
    if hinted:
        return head
    try:
        found = yield calls.get_branch(session, branch)
        head = found.head
    except NotFound:
        head = None
    ctx.set_head(session, branch, head)
    return head


def put_writes(
    ctx: Context,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
) -> Plan[None]:
    """Adds pending writes to a checkpoint: a new version of it holding them.

    The version goes on the namespace's branch when the checkpoint is its head (the usual
    case), else on the branch's side branch, so the namespace's head stays its newest
    checkpoint. Writing a (task, index) pair again is ignored, except that a call made only of
    special writes (errors, interrupts...) replaces them, as LangGraph's own savers do."""
    conf = config["configurable"]
    thread, ns, lg_id = str(conf["thread_id"]), conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
    session, branch = ctx.session(thread), branch_for(ns)
    replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
    waited = 0.0
    attempts = 0
    while attempts < MAX_ATTEMPTS:
        target = yield from _version_for_write(ctx, session, ns, lg_id)
        if target is None:
            if waited >= ctx.poll_seconds:
                raise NotFoundError(
                    f"checkpointd: no checkpoint {lg_id} in thread {thread!r} namespace {ns!r}"
                )
            pause = min(0.05 * 2 ** min(attempts, 4), 0.5)
            waited += pause
            yield Sleep(pause)
            continue
        attempts += 1
        contents = yield from contents_of(ctx, target)
        puts = _write_puts(ctx, contents, writes, task_id, task_path, replace)
        if not puts:
            return None
        try:
            yield from _commit_writes(ctx, session, branch, target, contents, puts)
            return None
        except (Aborted, AlreadyExists, NotFound) as err:
            ctx.learn_head(session, branch, err)
            ctx.learn_head(session, side_branch_for(branch), err)
            yield _backoff(attempts)
    raise ConflictError(
        f"checkpointd: writes of task {task_id} to checkpoint {lg_id} in thread {thread!r} lost "
        f"the race for their branch {MAX_ATTEMPTS} times"
    )


def _write_puts(
    ctx: Context,
    contents: Contents,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
    replace: bool,
) -> list[Put]:
    puts = []
    for position, (channel, value) in enumerate(writes):
        idx = codec.write_index(channel, position)
        key = codec.write_key(task_id, idx)
        if key in contents.write_keys and not replace:
            continue
        blob = codec.encode_write(ctx.serde, task_id, idx, channel, task_path, value)
        puts.append(Put(key, blob))
    return puts


def _commit_writes(
    ctx: Context,
    session: str,
    branch: str,
    target: Version,
    contents: Contents,
    puts: list[Put],
) -> Plan[None]:
    """Commits `target` plus `puts` on the branch (target is its head) or its side branch."""
    head = yield from _head(ctx, session, branch)
    if head == target.id:
        line, parent = branch, head
        changes: list[Change] = list(puts)
    else:
        line = side_branch_for(branch)
        parent = yield from _head(ctx, session, line)
        if parent is None:
            yield calls.create_branch(session, line, target.id)
            parent = target.id
        ops = (yield from diff_ops(parent, target.id)) if parent != target.id else {}
        ops.update((p.key, p) for p in puts)
        changes = list(ops.values())
    call = calls.create(
        session, changes, parent_id=parent, branch=line, metadata=target.metadata, incremental=True
    )
    created = yield call
    version = Version.of(created)
    assert version is not None
    written = contents.write_keys | {p.key for p in puts}
    ctx.remember(version, Contents(contents.channel_versions, written, contents.list_lengths))
    ctx.set_head(session, line, created.id)
