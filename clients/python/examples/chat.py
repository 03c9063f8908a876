#!/usr/bin/env python3
"""A LangGraph chat whose every step persists to checkpointd; any process, on any host, can
carry the conversation on.

    python chat.py --server 10.0.0.5:7777 --thread demo "hello"          # host A
    python chat.py --server 10.0.0.5:7777 --thread demo "and again"      # host B, later
    python chat.py --server 10.0.0.5:7777 --thread demo --history        # every checkpoint
"""

from __future__ import annotations

import argparse
import operator
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph

from checkpointd.langgraph import CheckpointdSaver


class Chat(TypedDict):
    turns: Annotated[list[str], operator.add]


def reply(state: Chat) -> dict:
    # A real agent would call a model here; counting turns shows the history came back.
    return {"turns": [f"reply #{len(state['turns']) // 2 + 1} to {state['turns'][-1]!r}"]}


def build(saver: CheckpointdSaver):
    builder = StateGraph(Chat)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:7777", help="checkpointd's address")
    parser.add_argument("--thread", default="demo", help="the conversation (a session)")
    parser.add_argument("--history", action="store_true", help="list the thread's checkpoints")
    parser.add_argument("message", nargs="?", help="the next user message")
    args = parser.parse_args()

    saver = CheckpointdSaver(args.server)
    graph = build(saver)
    config = {"configurable": {"thread_id": args.thread}}
    if args.history:
        for snapshot in graph.get_state_history(config):
            step, source = snapshot.metadata["step"], snapshot.metadata["source"]
            print(f"{snapshot.config['configurable']['checkpoint_id']}  step {step:>3} {source}")
    if args.message:
        for line in graph.invoke({"turns": [args.message]}, config)["turns"]:
            print(line)
    saver.close()


if __name__ == "__main__":
    main()
