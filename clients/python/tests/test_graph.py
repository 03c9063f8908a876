"""Real LangGraph graphs persisting to checkpointd, resumed by other savers ("other hosts")."""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from checkpointd.langgraph import CheckpointdSaver
from checkpointd.testing import LocalServer


class Chat(TypedDict):
    turns: Annotated[list[str], operator.add]


def reply(state: Chat) -> dict:
    return {"turns": [f"echo: {state['turns'][-1]}"]}


def chat_graph(saver: CheckpointdSaver, **compile_options: object):
    builder = StateGraph(Chat)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver, **compile_options)


def test_a_conversation_resumes_on_another_host(server: LocalServer) -> None:
    config = {"configurable": {"thread_id": f"chat-{uuid.uuid4()}"}}
    host_a = CheckpointdSaver(server.target)
    graph = chat_graph(host_a)
    for text in ("hello", "how are you"):
        graph.invoke({"turns": [text]}, config)
    host_a.close()

    host_b = CheckpointdSaver(server.target)
    resumed = chat_graph(host_b).invoke({"turns": ["bye"]}, config)
    assert resumed["turns"] == [
        "hello",
        "echo: hello",
        "how are you",
        "echo: how are you",
        "bye",
        "echo: bye",
    ]
    # Three invocations of input, loop and end checkpoints: the whole history is there.
    history = list(chat_graph(host_b).get_state_history(config))
    assert len(history) == 9
    assert history[-1].metadata["source"] == "input"
    host_b.close()


async def test_an_interrupted_run_is_resumed_by_another_async_saver(server: LocalServer) -> None:
    config = {"configurable": {"thread_id": f"interrupt-{uuid.uuid4()}"}}
    host_a = CheckpointdSaver(server.target)
    paused = await chat_graph(host_a, interrupt_before=["reply"]).ainvoke({"turns": ["hi"]}, config)
    assert paused["turns"] == ["hi"]
    await host_a.aclose()

    host_b = CheckpointdSaver(server.target)
    graph = chat_graph(host_b, interrupt_before=["reply"])
    state = await graph.aget_state(config)
    assert state.next == ("reply",)
    done = await graph.ainvoke(None, config)
    assert done["turns"] == ["hi", "echo: hi"]
    await host_b.aclose()


def test_time_travel_forks_from_an_earlier_checkpoint(server: LocalServer) -> None:
    config = {"configurable": {"thread_id": f"fork-{uuid.uuid4()}"}}
    saver = CheckpointdSaver(server.target)
    graph = chat_graph(saver)
    graph.invoke({"turns": ["first"]}, config)
    graph.invoke({"turns": ["second"]}, config)
    after_first = next(
        s
        for s in graph.get_state_history(config)
        if s.values.get("turns") == ["first", "echo: first"]
    )

    forked = graph.invoke({"turns": ["other"]}, after_first.config)
    assert forked["turns"] == ["first", "echo: first", "other", "echo: other"]
    assert graph.get_state(config).values["turns"] == forked["turns"]
    saver.close()


class Fan(TypedDict):
    index: int
    done: Annotated[list[int], operator.add]


def fan_graph(saver: CheckpointdSaver):
    # One step of 64 parallel tasks: LangGraph saves each task's writes as it finishes.
    builder = StateGraph(Fan)
    builder.add_node("work", lambda task: {"done": [task["index"]]})
    spread = [Send("work", {"index": i, "done": []}) for i in range(64)]
    builder.add_conditional_edges(START, lambda _: spread, ["work"])
    builder.add_edge("work", END)
    return builder.compile(checkpointer=saver)


def test_the_writes_of_64_parallel_tasks_all_land(server: LocalServer) -> None:
    config = {"configurable": {"thread_id": f"fan-{uuid.uuid4()}"}}
    saver = CheckpointdSaver(server.target)
    done = fan_graph(saver).invoke({"index": -1, "done": []}, config)
    assert sorted(done["done"]) == list(range(64))
    saver.close()


async def test_the_writes_of_64_parallel_async_tasks_all_land(server: LocalServer) -> None:
    config = {"configurable": {"thread_id": f"afan-{uuid.uuid4()}"}}
    saver = CheckpointdSaver(server.target)
    done = await fan_graph(saver).ainvoke({"index": -1, "done": []}, config)
    assert sorted(done["done"]) == list(range(64))
    await saver.aclose()
