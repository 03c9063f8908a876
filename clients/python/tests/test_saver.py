"""The LangGraph checkpointer: what it stores in checkpointd and how it behaves in the cases the
conformance suite does not reach (forks, other writers, late writes, other hosts)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

from langgraph.checkpoint.base import Checkpoint
from langgraph.checkpoint.base.id import uuid6

from checkpointd import Client
from checkpointd.langgraph import CheckpointdSaver
from checkpointd.testing import LocalServer


def checkpoint(values: dict[str, Any], versions: dict[str, int]) -> Checkpoint:
    return {
        "v": 4,
        "id": str(uuid6(clock_seq=-1)),
        "ts": "2026-12-04T00:00:00+00:00",
        "channel_values": values,
        "channel_versions": versions,
        "versions_seen": {},
        "updated_channels": None,
    }


def config(thread: str, parent: str | None = None, ns: str = "") -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if parent:
        conf["checkpoint_id"] = parent
    return {"configurable": conf}


def put(saver: CheckpointdSaver, thread: str, parent: str | None, cp: Checkpoint, new: dict) -> str:
    stored = saver.put(config(thread, parent), cp, {"source": "loop", "step": 0}, new)
    return stored["configurable"]["checkpoint_id"]


def test_each_checkpoint_is_a_state_of_its_document_and_channel_values(
    saver: CheckpointdSaver, client: Client
) -> None:
    thread = str(uuid.uuid4())
    put(
        saver, thread, None, checkpoint({"a": "x", "b": [1, 2]}, {"a": 1, "b": 1}), {"a": 1, "b": 1}
    )

    state = client.read_state(session_id=f"langgraph/{thread}")
    # A list is stored element by element, with its length under m/l/.
    assert set(state.entries) == {"m/checkpoint", "v/a", "m/l/b", "e/b/00000000", "e/b/00000001"}
    assert state.entries["m/l/b"] == b"2"
    assert state.checkpoint.metadata["source"] == "loop"


def test_an_append_to_a_list_stores_only_the_new_element(
    saver: CheckpointdSaver, client: Client
) -> None:
    thread = str(uuid.uuid4())
    # 200 messages of about 1.6 KB, each unlike the others: over 300 KB of history.
    history = [f"message {i}: " + f"{i:x}-word " * 200 for i in range(200)]
    one = put(saver, thread, None, checkpoint({"m": history}, {"m": 1}), {"m": 1})
    longer = [*history, "the new one"]
    two = put(saver, thread, one, checkpoint({"m": longer}, {"m": 2}), {"m": 2})
    shorter = longer[1:]
    put(saver, thread, two, checkpoint({"m": shorter}, {"m": 3}), {"m": 3})

    third, second, _ = list(client.list_checkpoints(f"langgraph/{thread}"))
    assert second.summary.logical_bytes > 300_000
    assert second.summary.stored_bytes < 4_000
    assert third.summary.entry_count == second.summary.entry_count - 1
    assert saver.get_tuple(config(thread, two)).checkpoint["channel_values"]["m"] == longer
    assert saver.get_tuple(config(thread)).checkpoint["channel_values"]["m"] == shorter


def test_unchanged_channel_values_are_neither_sent_nor_stored_again(
    saver: CheckpointdSaver, client: Client
) -> None:
    thread = str(uuid.uuid4())
    big = "history " * 20_000
    first = checkpoint({"history": big, "turn": 1}, {"history": 1, "turn": 1})
    one = put(saver, thread, None, first, {"history": 1, "turn": 1})
    second = checkpoint({"history": big, "turn": 2}, {"history": 1, "turn": 2})
    put(saver, thread, one, second, {"turn": 2})

    newest, oldest = list(client.list_checkpoints(f"langgraph/{thread}"))
    changed = {d.key for d in client.diff(oldest.id, newest.id)}
    assert changed == {"m/checkpoint", "v/turn"}
    # The 160 KB value was not stored a second time: the increment costs a few pages at most.
    assert newest.summary.logical_bytes > 160_000
    assert newest.summary.stored_bytes < 4_000
    assert saver.get_tuple(config(thread)).checkpoint["channel_values"]["history"] == big


def test_pending_writes_make_a_new_version_and_the_next_checkpoint_drops_them(
    saver: CheckpointdSaver, client: Client
) -> None:
    thread = str(uuid.uuid4())
    one = put(saver, thread, None, checkpoint({"a": 1}, {"a": 1}), {"a": 1})
    saver.put_writes(config(thread, one), [("a", 2), ("b", "x")], "task-1", "path")

    versions = list(client.list_checkpoints(f"langgraph/{thread}"))
    assert len(versions) == 2
    written = client.read_state(versions[0].id).entries
    assert {k for k in written if k.startswith("m/w/")} == {"m/w/task-1/0", "m/w/task-1/1"}
    assert saver.get_tuple(config(thread, one)).pending_writes == [
        ("task-1", "a", 2),
        ("task-1", "b", "x"),
    ]

    two = put(saver, thread, one, checkpoint({"a": 2}, {"a": 2}), {"a": 2})
    assert saver.get_tuple(config(thread, two)).pending_writes == []
    assert len(saver.get_tuple(config(thread, one)).pending_writes) == 2


def test_late_writes_to_an_older_checkpoint_leave_the_newest_in_place(
    saver: CheckpointdSaver, client: Client
) -> None:
    thread = str(uuid.uuid4())
    one = put(saver, thread, None, checkpoint({"a": 1}, {"a": 1}), {"a": 1})
    two = put(saver, thread, one, checkpoint({"a": 2}, {"a": 2}), {"a": 2})
    saver.put_writes(config(thread, one), [("a", "late")], "task-9")

    latest = saver.get_tuple(config(thread))
    assert latest.config["configurable"]["checkpoint_id"] == two
    assert latest.pending_writes == []
    assert saver.get_tuple(config(thread, one)).pending_writes == [("task-9", "a", "late")]
    branches = {b.name for b in client.list_branches(f"langgraph/{thread}")}
    assert branches == {"main", "w/main"}
    assert [t.checkpoint["id"] for t in saver.list(config(thread))] == [two, one]


def test_a_fork_from_an_older_checkpoint_takes_that_checkpoints_values(
    saver: CheckpointdSaver,
) -> None:
    thread = str(uuid.uuid4())
    one = put(
        saver, thread, None, checkpoint({"a": "a1", "b": "b1"}, {"a": 1, "b": 1}), {"a": 1, "b": 1}
    )
    put(saver, thread, one, checkpoint({"a": "a2", "b": "b2"}, {"a": 2, "b": 2}), {"a": 2, "b": 2})
    # Time travel: a new checkpoint after `one` that changes only b.
    fork = put(saver, thread, one, checkpoint({"a": "a1", "b": "fork"}, {"a": 1, "b": 3}), {"b": 3})

    latest = saver.get_tuple(config(thread))
    assert latest.config["configurable"]["checkpoint_id"] == fork
    assert latest.checkpoint["channel_values"] == {"a": "a1", "b": "fork"}
    assert latest.parent_config["configurable"]["checkpoint_id"] == one


def test_two_hosts_writing_one_thread_both_land(server: LocalServer) -> None:
    thread = str(uuid.uuid4())
    host_a, host_b = CheckpointdSaver(server.target), CheckpointdSaver(server.target)
    try:
        one = put(host_a, thread, None, checkpoint({"a": 1}, {"a": 1}), {"a": 1})
        # host_b learns the head, then host_a moves it: host_b's hint is stale.
        assert host_b.get_tuple(config(thread)) is not None
        two = put(
            host_b, thread, one, checkpoint({"a": 2, "b": 1}, {"a": 2, "b": 1}), {"a": 2, "b": 1}
        )
        three = put(host_a, thread, one, checkpoint({"a": 3}, {"a": 3}), {"a": 3})
        four = put(host_b, thread, two, checkpoint({"a": 4, "b": 1}, {"a": 4, "b": 1}), {"a": 4})

        assert host_a.get_tuple(config(thread, three)).checkpoint["channel_values"] == {"a": 3}
        latest = host_a.get_tuple(config(thread))
        assert latest.config["configurable"]["checkpoint_id"] == four
        assert latest.checkpoint["channel_values"] == {"a": 4, "b": 1}
    finally:
        host_a.close()
        host_b.close()


def test_writes_that_arrive_before_their_checkpoint_wait_for_it(saver: CheckpointdSaver) -> None:
    thread = str(uuid.uuid4())
    cp = checkpoint({"a": 1}, {"a": 1})
    errors: list[BaseException] = []

    def early_writes() -> None:
        try:
            saver.put_writes(config(thread, cp["id"]), [("a", "early")], "task-0")
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    writer = threading.Thread(target=early_writes)
    writer.start()
    time.sleep(0.3)
    put(saver, thread, None, cp, {"a": 1})
    writer.join(15)
    assert not writer.is_alive() and errors == []
    assert saver.get_tuple(config(thread)).pending_writes == [("task-0", "a", "early")]


def test_any_thread_id_is_stored_and_listed_back(saver: CheckpointdSaver) -> None:
    thread = f"user 42/é {uuid.uuid4()}"
    one = put(saver, thread, None, checkpoint({"a": 1}, {"a": 1}), {"a": 1})
    found = [t for t in saver.list(None) if t.config["configurable"]["thread_id"] == thread]
    assert [t.config["configurable"]["checkpoint_id"] for t in found] == [one]


def test_subgraph_namespaces_are_separate_branches(saver: CheckpointdSaver, client: Client) -> None:
    thread = str(uuid.uuid4())
    root = checkpoint({"a": "root"}, {"a": 1})
    saver.put(config(thread), root, {}, {"a": 1})
    child = checkpoint({"a": "child"}, {"a": 1})
    saver.put(config(thread, ns="tools:1|inner:2"), child, {}, {"a": 1})

    names = {b.name for b in client.list_branches(f"langgraph/{thread}")}
    assert names == {"main", "ns/tools:1/inner:2"}
    found = saver.get_tuple(config(thread, ns="tools:1|inner:2"))
    assert found.checkpoint["channel_values"] == {"a": "child"}
    assert found.config["configurable"]["checkpoint_ns"] == "tools:1|inner:2"


def test_one_saver_serves_successive_event_loops(server: LocalServer) -> None:
    # A script may call asyncio.run more than once with the same saver; each loop needs its own
    # grpc.aio channel.
    thread = str(uuid.uuid4())
    saver = CheckpointdSaver(server.target)
    cp = checkpoint({"a": 1}, {"a": 1})
    asyncio.run(saver.aput(config(thread), cp, {"source": "input", "step": -1}, {"a": 1}))
    found = asyncio.run(saver.aget_tuple(config(thread)))
    assert found is not None and found.checkpoint["id"] == cp["id"]
    asyncio.run(saver.aclose())
