#!/usr/bin/env python3
"""Storage used by one long LangGraph conversation: checkpointd against LangGraph's Postgres
checkpointer (`PostgresSaver` from langgraph-checkpoint-postgres), on the same PostgreSQL.

The same chat graph (a `MessagesState` graph whose one node answers every user message) runs
`--turns` turns twice: once persisting with `PostgresSaver` into database `<prefix>_langgraph`,
once with `checkpointd.langgraph.CheckpointdSaver` through a checkpointd whose catalog is
database `<prefix>_checkpointd` and whose chunks are in a temporary directory. Both databases
are dropped and created afresh. The texts come from a seeded generator, so both runs store the
same conversation.

Counted for LangGraph: `pg_total_relation_size` of its tables (heap, TOAST and indexes). For
checkpointd: the same over every table of its database, plus the bytes of every file in its
object store (the chunk directory). Sizes are reported as written, and again after
`VACUUM FULL` of both databases, which drops what row updates left behind.

    python benches/langgraph/storage_compare.py --checkpointd target/release/checkpointd

Needs the packages of clients/python/requirements.txt and the checkpointd package installed
(scripts/python-client.sh makes target/py-venv with both).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from checkpointd.langgraph import CheckpointdSaver
from checkpointd.testing import LocalServer

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
# The tables langgraph-checkpoint-postgres 3.2.0 creates (its migrations table included).
LANGGRAPH_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations")

# Words of the generated texts, most frequent first, so that they compress about as chat does.
WORDS = (
    "the to a of and in is it that for this I you on with be we not can as if so your will "
    "have are at or by an from file test error run check state session code need function "
    "value change update fix add remove request response server client config database query "
    "table index timeout retry because then also which when there into should would could "
    "about what how here one two first next last before after again still only just more"
).split()
# Words in a user message and in an answer: chat turns of roughly 0.3 KB and 1.2 KB.
USER_WORDS = (20, 90)
ANSWER_WORDS = (80, 320)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=500, help="user messages, each answered")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="any database of the PostgreSQL server")
    parser.add_argument(
        "--prefix", default="ckpt_lgcompare", help="databases <prefix>_langgraph, _checkpointd"
    )
    parser.add_argument(
        "--checkpointd",
        default=str(REPO / "target" / "release" / "checkpointd"),
        help="the server binary (a debug build stores the same bytes, only slower)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated texts")
    parser.add_argument("--json", help="also write the figures to this file as JSON")
    return parser.parse_args(argv)


def sentence(rng: random.Random, words: tuple[int, int]) -> str:
    count = rng.randint(*words)
    # A Zipf-like pick: low indexes (frequent words) far more often than high ones.
    picked = [WORDS[min(int(rng.paretovariate(1.2)) - 1, len(WORDS) - 1)] for _ in range(count)]
    return " ".join(picked).capitalize() + "."


def chat_graph(saver: BaseCheckpointSaver, seed: int) -> Any:
    """One node that answers the newest message with generated text (no model involved)."""
    rng = random.Random(seed * 1_000_003)

    def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(sentence(rng, ANSWER_WORDS))]}

    builder = StateGraph(MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=saver)


def converse(saver: BaseCheckpointSaver, turns: int, seed: int) -> dict[str, Any]:
    graph = chat_graph(saver, seed)
    rng = random.Random(seed)
    config = {"configurable": {"thread_id": "conversation-1"}}
    started = time.monotonic()
    for _ in range(turns):
        graph.invoke({"messages": [HumanMessage(sentence(rng, USER_WORDS))]}, config)
    seconds = time.monotonic() - started
    state = graph.get_state(config)
    messages = state.values["messages"]
    text_bytes = sum(len(m.content.encode()) for m in messages)
    checkpoints = sum(1 for _ in saver.list(config))
    return {
        "seconds": round(seconds, 1),
        "messages": len(messages),
        "text_bytes": text_bytes,
        "checkpoints": checkpoints,
    }


def database_url(dsn: str, name: str) -> str:
    return make_conninfo(dsn, dbname=name)


def recreate(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def table_bytes(url: str, tables: tuple[str, ...] | None = None) -> dict[str, int]:
    """pg_total_relation_size of each table of the public schema (or of `tables`)."""
    query = (
        "SELECT tablename, pg_total_relation_size(quote_ident(tablename)::regclass) "
        "FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    with psycopg.connect(url) as conn:
        rows = conn.execute(query).fetchall()
    return {name: size for name, size in rows if tables is None or name in tables}


def vacuum_full(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM FULL")


def dir_bytes(path: str) -> tuple[int, int]:
    """Bytes and count of the files under `path`."""
    total, files = 0, 0
    for parent, _, names in os.walk(path):
        for name in names:
            total += os.path.getsize(os.path.join(parent, name))
            files += 1
    return total, files


def run_langgraph(args: argparse.Namespace) -> dict[str, Any]:
    name = f"{args.prefix}_langgraph"
    recreate(args.dsn, name)
    url = database_url(args.dsn, name)
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        run = converse(saver, args.turns, args.seed)
    run["tables"] = table_bytes(url, LANGGRAPH_TABLES)
    vacuum_full(url)
    run["tables_vacuumed"] = table_bytes(url, LANGGRAPH_TABLES)
    return run


def run_checkpointd(args: argparse.Namespace) -> dict[str, Any]:
    name = f"{args.prefix}_checkpointd"
    recreate(args.dsn, name)
    url = database_url(args.dsn, name)
    with LocalServer(args.checkpointd, database=_sqlx_url(url)) as server:
        saver = CheckpointdSaver(server.target)
        run = converse(saver, args.turns, args.seed)
        saver.close()
        run["tables"] = table_bytes(url)
        run["store_bytes"], run["store_files"] = dir_bytes(server.data_dir)
        vacuum_full(url)
        run["tables_vacuumed"] = table_bytes(url)
    return run


def _sqlx_url(conninfo: str) -> str:
    """checkpointd takes a postgres:// URL; psycopg's conninfo may be key=value pairs."""
    parts = conninfo_to_dict(conninfo)
    user = parts.get("user", "postgres")
    auth = f"{user}:{parts['password']}" if parts.get("password") else user
    host, port = parts.get("host", "127.0.0.1"), parts.get("port", "5432")
    return f"postgres://{auth}@{host}:{port}/{parts['dbname']}"


def mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def report(turns: int, langgraph: dict[str, Any], ours: dict[str, Any]) -> list[str]:

    lg, lg_vac = sum(langgraph["tables"].values()), sum(langgraph["tables_vacuumed"].values())
    cd_tables, cd_vac = sum(ours["tables"].values()), sum(ours["tables_vacuumed"].values())
    cd, cd_after = cd_tables + ours["store_bytes"], cd_vac + ours["store_bytes"]
    lines = [
        f"{turns} turns, {ours['messages']} messages, {mib(ours['text_bytes'])} of message text",
        f"checkpoints listed: LangGraph Postgres {langgraph['checkpoints']}, "
        f"checkpointd {ours['checkpoints']}",
        "",
        f"{'':34} {'as written':>14} {'after VACUUM FULL':>18}",
        f"{'LangGraph Postgres, tables':34} {mib(lg):>14} {mib(lg_vac):>18}",
        f"{'checkpointd, catalog tables':34} {mib(cd_tables):>14} {mib(cd_vac):>18}",
        f"{'checkpointd, object store':34} {mib(ours['store_bytes']):>14} "
        f"{mib(ours['store_bytes']):>18}  ({ours['store_files']} files)",
        f"{'checkpointd, total':34} {mib(cd):>14} {mib(cd_after):>18}",
        f"{'LangGraph / checkpointd':34} {lg / cd:>13.1f}x {lg_vac / cd_after:>17.1f}x",
        "",
        "LangGraph tables (as written): "
        + ", ".join(f"{k} {mib(v)}" for k, v in langgraph["tables"].items()),
        "checkpointd tables (as written, over 64 KiB): "
        + ", ".join(f"{k} {mib(v)}" for k, v in ours["tables"].items() if v > 65536),
        f"conversation time: LangGraph Postgres {langgraph['seconds']} s, "
        f"checkpointd {ours['seconds']} s",
    ]
    return lines


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    langgraph = run_langgraph(args)
    ours = run_checkpointd(args)
    print("\n".join(report(args.turns, langgraph, ours)))
    if args.json:
        Path(args.json).write_text(json.dumps({"langgraph": langgraph, "checkpointd": ours}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
