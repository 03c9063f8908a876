"""The typed client against a real server."""

from __future__ import annotations

import uuid

import pytest

from checkpointd import Aborted, AsyncClient, Client, Delete, InvalidArgument, NotFound, Put


def new_session() -> str:
    return f"py-client/{uuid.uuid4()}"


def test_read_state_returns_the_bytes_a_full_create_wrote(client: Client) -> None:
    session = new_session()
    created = client.create(session, [Put("a", b"one"), Put("b", b"\x00\xff")], message="first")
    assert created.session_id == session
    assert created.branch == "main"
    assert created.parent_ids == ()
    assert created.summary.entry_count == 2

    state = client.read_state(created.id)
    assert state.checkpoint.id == created.id
    assert state.checkpoint.message == "first"
    assert state.entries == {"a": b"one", "b": b"\x00\xff"}


def test_incremental_create_applies_puts_and_deletes_to_its_parent(client: Client) -> None:
    session = new_session()
    first = client.create(session, [Put("a", b"1"), Put("b", b"2")])
    second = client.create(
        session, [Put("a", b"3"), Delete("b"), Put("c", b"4")], parent_id=first.id, incremental=True
    )
    assert second.parent_ids == (first.id,)
    assert client.read_state(session_id=session).entries == {"a": b"3", "c": b"4"}
    assert client.read_state(first.id).entries == {"a": b"1", "b": b"2"}


def test_a_write_on_a_moved_branch_is_aborted_with_the_current_head(client: Client) -> None:
    session = new_session()
    first = client.create(session, [Put("k", b"v")])
    second = client.create(session, [Put("k", b"w")], parent_id=first.id, incremental=True)
    with pytest.raises(Aborted) as refused:
        client.create(session, [Put("k", b"x")], parent_id=first.id, incremental=True)
    assert refused.value.current_head == second.id


def test_a_create_sent_again_with_its_request_id_returns_the_first_checkpoint(
    client: Client,
) -> None:
    session = new_session()
    first = client.create(session, [Put("k", b"v")], request_id="turn-1")
    again = client.create(session, [Put("k", b"v")], request_id="turn-1")
    assert again.id == first.id
    assert [c.id for c in client.list_checkpoints(session)] == [first.id]
    # Streamed creates carry it too.
    big = bytes(range(256)) * (12 * 1024)
    second = client.create(session, [Put("big", big)], parent_id=first.id, request_id="turn-2")
    repeat = client.create(session, [Put("big", big)], parent_id=first.id, request_id="turn-2")
    assert repeat.id == second.id
    assert len(list(client.list_checkpoints(session))) == 2


def test_missing_and_malformed_are_typed_errors(client: Client) -> None:
    with pytest.raises(NotFound):
        client.read_state(session_id=new_session())
    with pytest.raises(InvalidArgument) as bad:
        client.create("has space", [Put("k", b"v")])
    assert "session" in bad.value.details


def test_values_over_the_unary_limit_are_streamed(client: Client) -> None:
    session = new_session()
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB, above the 2 MiB unary threshold
    created = client.create(session, [Put("big", big), Put("small", b"s")])
    assert created.summary.logical_bytes == len(big) + 1
    assert client.read_state(created.id).entries == {"big": big, "small": b"s"}


def test_listing_filters_by_metadata_containment(client: Client) -> None:
    session = new_session()
    first = client.create(session, [Put("k", b"1")], metadata={"step": 1, "tags": ["a", "b"]})
    second = client.create(
        session, [Put("k", b"2")], parent_id=first.id, incremental=True, metadata={"step": 2}
    )
    assert [c.id for c in client.list_checkpoints(session)] == [second.id, first.id]
    listed = client.list_checkpoints(session, metadata_contains={"tags": ["b"]})
    assert [c.id for c in listed] == [first.id]
    assert [
        c.metadata for c in client.list_checkpoints(session, metadata_contains={"step": 2})
    ] == [{"step": 2}]


def test_diff_names_each_changed_key_with_its_values(client: Client) -> None:
    session = new_session()
    first = client.create(session, [Put("a", b"1"), Put("b", b"2")])
    second = client.create(
        session, [Put("a", b"9"), Delete("b"), Put("c", b"3")], parent_id=first.id, incremental=True
    )
    changes = {
        e.key: (e.kind, e.old_value, e.new_value)
        for e in client.diff(first.id, second.id, include_values=True)
    }
    assert changes == {
        "a": ("modified", b"1", b"9"),
        "b": ("removed", b"2", None),
        "c": ("added", None, b"3"),
    }


async def test_async_client_round_trips_and_lists(aclient: AsyncClient) -> None:
    session = new_session()
    first = await aclient.create(session, [Put("k", b"v")])
    state = await aclient.read_state(session_id=session)
    assert state.entries == {"k": b"v"}
    assert [c.id async for c in aclient.list_checkpoints(session)] == [first.id]
    with pytest.raises(Aborted) as refused:
        await aclient.create(session, [Put("k", b"w")], parent_id=None)
    assert refused.value.current_head == first.id
