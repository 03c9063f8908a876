"""Deleting, pruning and copying threads: the checkpointer's optional capabilities, as plans
(see `_plans`) that `checkpointd.langgraph.saver` runs with either client."""

from __future__ import annotations

from collections.abc import Sequence

from checkpointd import _calls as calls
from checkpointd.errors import Aborted, FailedPrecondition, NotFound
from checkpointd.langgraph._names import branch_for, thread_for
from checkpointd.langgraph._plans import Context, Plan, Version, diff_ops, newest_versions
from checkpointd.types import Change, Checkpoint, Put


def delete_thread(ctx: Context, thread_id: str) -> Plan[None]:
    session = ctx.session(thread_id)
    yield from _delete_session(session)
    ctx.forget_heads(session)


def _delete_session(session: str) -> Plan[None]:
    try:
        yield calls.delete_session(session)
    except NotFound:
        pass


def prune(ctx: Context, thread_ids: Sequence[str], strategy: str) -> Plan[None]:
    """`keep_latest`: each namespace keeps its newest checkpoint (its branch head); `delete`:
    the threads go. Stored bytes are freed by checkpointd's collection, not here."""
    if strategy not in ("keep_latest", "delete"):
        raise ValueError(f"checkpointd: unknown prune strategy {strategy!r} (keep_latest, delete)")
    for thread in thread_ids:
        if strategy == "delete":
            yield from delete_thread(ctx, thread)
        else:
            yield from _keep_heads(ctx, ctx.session(thread))


def _keep_heads(ctx: Context, session: str) -> Plan[None]:
    try:
        branches = yield calls.list_branches(session)
    except NotFound:
        return
    keep = set()
    for branch in branches:
        if branch.name.startswith("w/"):
            yield from _delete_branch(session, branch.name, branch.head)
        else:
            keep.add(branch.head)
    doomed = yield from _all_checkpoint_ids(session)
    yield from _delete_checkpoints([c for c in doomed if c not in keep])
    ctx.forget_heads(session)


def _all_checkpoint_ids(session: str) -> Plan[list[str]]:
    ids, token = [], ""
    while True:
        try:
            page = yield calls.list_checkpoints(session, page_token=token)
        except NotFound:
            return ids
        ids.extend(cp.id for cp in page.items)
        token = page.next_page_token
        if not token:
            return ids


def _delete_branch(session: str, name: str, head: str) -> Plan[None]:
    try:
        yield calls.delete_branch(session, name, expected_head=head)
    except (NotFound, Aborted):
        pass  # gone already, or moved by another writer: its new head is not ours to drop


def _delete_checkpoints(ids: Sequence[str]) -> Plan[None]:
    for checkpoint_id in ids:
        try:
            yield calls.delete_checkpoint(checkpoint_id)
        except (NotFound, FailedPrecondition):
            pass  # deleted meanwhile, or became a head again under a concurrent writer


def delete_for_runs(ctx: Context, run_ids: Sequence[str]) -> Plan[None]:
    """Deletes every checkpoint whose metadata `run_id` is one of `run_ids`, in every thread.

    Checkpoints are found with checkpointd's Search over metadata words, then checked exactly.
    A namespace whose head goes moves back to its newest remaining checkpoint."""
    doomed: dict[str, set[str]] = {}
    for run_id in run_ids:
        found = yield from _search_run(ctx, str(run_id))
        for cp in found:
            doomed.setdefault(cp.session_id, set()).add(cp.id)
    for session, ids in doomed.items():
        yield from _delete_in_session(ctx, session, ids)


def _search_run(ctx: Context, run_id: str) -> Plan[list[Checkpoint]]:
    found, token = [], ""
    while True:
        page = yield calls.search(run_id, page_token=token)
        for cp in page.items:
            ours = thread_for(cp.session_id, ctx.session_prefix) is not None
            if ours and cp.metadata.get("run_id") == run_id:
                found.append(cp)
        token = page.next_page_token
        if not token:
            return found


def _delete_in_session(ctx: Context, session: str, doomed: set[str]) -> Plan[None]:
    ctx.forget_heads(session)
    try:
        branches = yield calls.list_branches(session)
    except NotFound:
        return
    versions = yield from newest_versions(session, {})
    survivors = [v for v in versions if v.id not in doomed]
    if not survivors:
        yield from _delete_session(session)
        return
    for branch in branches:
        if branch.head not in doomed:
            continue
        replacement = _newest_on(branch.name, survivors)
        if replacement is None:
            yield from _delete_branch(session, branch.name, branch.head)
        else:
            try:
                yield calls.reset_branch(session, branch.name, replacement, branch.head)
            except Aborted:
                pass  # another writer moved it: its head is no longer one to delete
    yield from _delete_checkpoints(sorted(doomed))


def _newest_on(branch: str, survivors: list[Version]) -> str | None:
    """The newest remaining checkpoint of the namespace `branch` holds (None for side branches,
    whose heads are only ever needed while they are heads)."""
    mine = [v for v in survivors if branch_for(v.ns) == branch]
    if not mine:
        return None
    return max(mine, key=lambda v: (v.lg_id, v.sequence)).id


def copy_thread(ctx: Context, source_thread: str, target_thread: str) -> Plan[None]:
    """Copies every checkpoint of a thread, with its pending writes and ids, into another.

    Checkpoints are replayed in commit order; each copy is created incrementally from its
    copied parent with the changes Diff reports, so only changed values travel and the stored
    chunks are shared with the source."""
    source, target = ctx.session(source_thread), ctx.session(target_thread)
    checkpoints = []
    token = ""
    while True:
        try:
            page = yield calls.list_checkpoints(source, page_token=token)
        except NotFound:
            return
        checkpoints.extend(page.items)
        token = page.next_page_token
        if not token:
            break
    checkpoints.sort(key=lambda cp: cp.sequence)
    copies: dict[str, str] = {}
    heads: dict[str, str | None] = {}
    for cp in checkpoints:
        copies[cp.id] = yield from _copy_one(target, cp, copies, heads)
    source_branches = yield calls.list_branches(source)
    for branch in source_branches:
        if branch.head in copies:  # else written after the listing: not part of this copy
            yield from _point(target, branch.name, copies[branch.head], heads)
    ctx.forget_heads(target)


def _copy_one(
    target: str, cp: Checkpoint, copies: dict[str, str], heads: dict[str, str | None]
) -> Plan[str]:
    parent = copies.get(cp.parent_ids[0]) if cp.parent_ids else None
    if parent is None:
        state = yield calls.read_state(cp.id)
        changes: list[Change] = [Put(k, v) for k, v in state.entries.items()]
        head = yield from _target_head(target, cp.branch, heads)
        call = calls.create(
            target,
            changes,
            parent_id=head,
            branch=cp.branch,
            metadata=cp.metadata,
            message=cp.message,
        )
    else:
        yield from _point(target, cp.branch, parent, heads)
        ops = yield from diff_ops(cp.parent_ids[0], cp.id)
        call = calls.create(
            target,
            list(ops.values()),
            parent_id=parent,
            branch=cp.branch,
            metadata=cp.metadata,
            message=cp.message,
            incremental=True,
        )
    created = yield call
    heads[cp.branch] = created.id
    return created.id


def _target_head(target: str, branch: str, heads: dict[str, str | None]) -> Plan[str | None]:
    if branch not in heads:
        try:
            found = yield calls.get_branch(target, branch)
            heads[branch] = found.head
        except NotFound:
            heads[branch] = None
    return heads[branch]


def _point(
    target: str, branch: str, checkpoint_id: str, heads: dict[str, str | None]
) -> Plan[None]:
    """Makes `branch` of the target session point at `checkpoint_id`."""
    head = yield from _target_head(target, branch, heads)
    if head == checkpoint_id:
        return
    if head is None:
        yield calls.create_branch(target, branch, checkpoint_id)
    else:
        yield calls.reset_branch(target, branch, checkpoint_id, head)
    heads[branch] = checkpoint_id
