"""Thread and namespace names become session and branch names, injectively and reversibly."""

from __future__ import annotations

import pytest

from checkpointd.langgraph._names import branch_for, session_for, side_branch_for, thread_for


@pytest.mark.parametrize("thread", ["t1", "0b3c-uuid", "a:b@c/d", "with space", "é", "@plain", ""])
def test_every_thread_id_comes_back_from_its_session(thread: str) -> None:
    session = session_for(thread)
    assert session.startswith("langgraph/")
    assert thread_for(session) == thread


def test_plain_and_hex_thread_ids_do_not_collide() -> None:
    # "@41" would be the hex form of "A" if "@" were not escaped itself.
    assert session_for("@41") != session_for("A")
    assert thread_for("someone-else/t1") is None


def test_namespaces_map_to_distinct_branches() -> None:
    assert branch_for("") == "main"
    assert branch_for("child:1") == "ns/child:1"
    assert branch_for("parent:1|child:2") == "ns/parent:1/child:2"
    # A "/" inside a namespace part cannot pass for LangGraph's separator.
    assert branch_for("parent:1/child:2") == "nsx/" + b"parent:1/child:2".hex()
    assert side_branch_for("main") == "w/main"


def test_a_name_too_long_for_checkpointd_is_refused_with_its_reason() -> None:
    with pytest.raises(ValueError, match="too long for checkpointd"):
        session_for("x" * 300)
