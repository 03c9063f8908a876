#!/usr/bin/env python3
"""LangGraph's Postgres checkpointer (`AsyncPostgresSaver`) under the load that `ckpt-bench run`
puts on checkpointd, so that checkpointd's throughput can be reported as a ratio of this peer's.

Prints one JSON object on stdout and a one-line summary on stderr. See README.md beside this file.
"""

import argparse
import asyncio
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Any

import psycopg
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/langgraph_bench"

# The checkpoint format LangGraph's graph loop writes today. Older formats (v < 4) make every
# read of a checkpoint with a parent run a second query for pending sends.
CHECKPOINT_FORMAT = 4

# A nonce of 16 hex digits is written into every value at least every STAMP_EVERY bytes, as
# ckpt-bench does, so that no two puts store the same bytes.
STAMP_LEN = 16
STAMP_EVERY = 1000

# The tables LangGraph's migrations create; emptied before every run.
TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")

# Words of the `text` shape, most frequent first; with the weights in `transcript` the text
# compresses roughly like an agent transcript.
WORDS = (
    "the to a of and in is it that for this I fn let you on with be we not file test error if "
    "return self can as use from will have are at or by an mut pub should function value now run "
    "check struct impl new state session checkpoint cargo build line src so code need Result Ok "
    "Err String Vec None Some match async await type config server client request response "
    "update change fix add remove method module crate path key bytes data read write output "
    "input found failed passed warning expected actual because then also which when there into "
    "database query table column index migration schema timeout retry connection pool stream"
).split()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="database to write (created if missing)")
    parser.add_argument("--op", choices=("put", "get"), default="put", help="operation to measure")
    parser.add_argument("--size", type=int, default=10_000, help="bytes of a state, all channels")
    parser.add_argument("--channels", type=int, default=10, help="channels the state is split into")
    parser.add_argument("--concurrency", type=int, default=1, help="asyncio tasks = pool size")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds run first, not reported")
    parser.add_argument(
        "--checkpoints", type=int, default=16, help="get: checkpoints written in setup and cycled"
    )
    parser.add_argument(
        "--shape",
        choices=("text", "random"),
        default="text",
        help="text: transcript-like, compressible (ckpt-bench --shape json); "
        "random: incompressible",
    )
    parser.add_argument(
        "--encoding",
        choices=("bytes", "msgpack"),
        default="bytes",
        help="bytes: each channel holds bytes, stored as-is; msgpack: a small dict around them, "
        "serialized with ormsgpack",
    )
    parser.add_argument(
        "--savers",
        choices=("shared", "per-task"),
        default="shared",
        help="shared: one AsyncPostgresSaver for all tasks, as an app compiles one into its graph "
        "(it runs one statement batch at a time); per-task: one saver per task over the same pool",
    )
    args = parser.parse_args(argv)
    if min(args.size, args.channels, args.concurrency, args.checkpoints) < 1:
        parser.error("--size, --channels, --concurrency and --checkpoints must be at least 1")
    return args


# --- payload ---


def transcript(length: int, seed: int) -> bytes:
    """Deterministic JSON lines of `length` bytes made of skewed words."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    lines: list[bytes] = []
    total = 0
    while total < length:
        words = " ".join(rng.choices(WORDS, weights, k=rng.randint(8, 120)))
        line = json.dumps({"role": rng.choice(("user", "assistant", "tool")), "text": words})
        lines.append(line.encode() + b"\n")
        total += len(lines[-1])
    return b"".join(lines)[:length]


@dataclass
class Payload:
    """The channel values of a state: `size` bytes split over `channels`, unique per request."""

    size: int
    channels: int
    shape: str
    encoding: str
    seed: int = field(default_factory=lambda: random.getrandbits(63))
    templates: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.shape == "text":
            self.templates = [transcript(n, seed=i) for i, n in enumerate(self.lengths())]

    def lengths(self) -> list[int]:
        """Bytes of each channel's value; they differ by at most one."""
        base, extra = divmod(self.size, self.channels)
        return [base + (i < extra) for i in range(self.channels)]

    def state(self, request: int) -> dict[str, Any]:
        """The channel values of request number `request`."""
        nonce = f"{(self.seed + request) % 2**64:016x}".encode()
        values: dict[str, Any] = {}
        for i, length in enumerate(self.lengths()):
            raw = self.value(i, length, nonce)
            # A str would be inlined in the checkpoint's JSONB, not stored as a blob, so the
            # msgpack form wraps the bytes the way a message object wraps its content.
            values[f"c{i:04}"] = raw if self.encoding == "bytes" else {"kind": "text", "data": raw}
        return values

    def value(self, index: int, length: int, nonce: bytes) -> bytes:
        if self.shape == "random":
            return random.randbytes(length)
        value = bytearray(self.templates[index])
        for at in range(0, length, STAMP_EVERY):
            width = min(STAMP_LEN, length - at)
            value[at : at + width] = nonce[STAMP_LEN - width :]
        return bytes(value)


# --- calls ---


class Putter:
    """Writes new checkpoints to one thread, each the child of the thread's previous one, with a
    new version of every channel so that every put stores all its blobs."""

    def __init__(self, saver: AsyncPostgresSaver, payload: Payload, thread_id: str, worker: int):
        self.saver = saver
        self.payload = payload
        self.config: dict[str, Any] = {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ""}
        }
        self.versions: dict[str, str] = {}
        self.worker = worker
        self.step = 0

    async def call(self) -> tuple[float, float, int]:
        values = self.payload.state(self.worker << 32 | self.step)
        versions = {
            channel: self.saver.get_next_version(self.versions.get(channel), None)
            for channel in values
        }
        checkpoint = {
            "v": CHECKPOINT_FORMAT,
            "id": str(uuid6(clock_seq=self.step)),
            "ts": datetime.now(timezone.utc).isoformat(),
            "channel_values": values,
            "channel_versions": versions,
            "versions_seen": {},
            "updated_channels": list(values),
        }
        metadata = {"source": "loop", "step": self.step, "parents": {}}

        start = time.perf_counter()
        self.config = await self.saver.aput(self.config, checkpoint, metadata, versions)
        end = time.perf_counter()

        self.versions = versions
        self.step += 1
        return start, end, self.payload.size


class Getter:
    """Reads whole checkpoints written in setup, cycling through them."""

    def __init__(self, saver: AsyncPostgresSaver, payload: Payload, configs: list, worker: int):
        self.saver = saver
        self.payload = payload
        self.configs = configs
        self.next = worker

    async def call(self) -> tuple[float, float, int]:
        config = self.configs[self.next % len(self.configs)]
        self.next += 1

        start = time.perf_counter()
        found = await self.saver.aget_tuple(config)
        end = time.perf_counter()

        if found is None or len(found.checkpoint["channel_values"]) != self.payload.channels:
            checkpoint_id = config["configurable"]["checkpoint_id"]
            raise RuntimeError(f"checkpoint {checkpoint_id} came back incomplete")
        return start, end, self.payload.size


# --- database ---


def ensure_database(dsn: str) -> None:
    """Creates the DSN's database through the `postgres` database if it does not exist."""
    name = conninfo_to_dict(dsn).get("dbname") or "postgres"
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            pass  # another run created it meanwhile


async def open_pool(dsn: str, size: int) -> AsyncConnectionPool:
    """A pool configured as LangGraph's documentation configures it."""
    pool = AsyncConnectionPool(
        conninfo=dsn,
        min_size=size,
        max_size=size,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    )
    await pool.open(wait=True)
    return pool


async def truncate(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        await conn.execute("TRUNCATE " + ", ".join(TABLES))


# --- the run ---


@dataclass
class Record:
    """What the measured calls did: calls that started before the measuring window are left out."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    bytes: int = 0
    errors: int = 0


async def drive(
    worker: Putter | Getter, measure_from: float, stop_at: float, record: Record
) -> None:
    """Calls until `stop_at`, recording the calls that start at or after `measure_from`."""
    while (began := time.perf_counter()) < stop_at:
        try:
            start, end, size = await worker.call()
        except Exception as err:  # counted and reported; the run goes on like ckpt-bench's
            if began >= measure_from:
                record.errors += 1
                if record.errors <= 3:
                    print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        if start >= measure_from:
            record.starts.append(start)
            record.ends.append(end)
            record.latencies.append(end - start)
            record.bytes += size


async def prepare(args: argparse.Namespace, savers: list, payload: Payload) -> list:
    """The workers of the run; for `get`, writes the checkpoints they read (not timed)."""
    run = f"{args.op}/{payload.seed:016x}"
    if args.op == "put":
        return [Putter(s, payload, f"bench/{run}/{w}", w) for w, s in enumerate(savers)]

    # Like ckpt-bench's load setup: one chain of checkpoints in one session.
    writer = Putter(savers[0], payload, f"bench/{run}/setup", worker=1 << 20)
    configs = []
    for _ in range(args.checkpoints):
        await writer.call()
        configs.append(writer.config)
    return [Getter(s, payload, configs, w) for w, s in enumerate(savers)]


async def run(args: argparse.Namespace) -> Record:
    ensure_database(args.dsn)
    pool = await open_pool(args.dsn, args.concurrency)
    try:
        first = AsyncPostgresSaver(pool)
        await first.setup()
        await truncate(pool)

        count = args.concurrency if args.savers == "per-task" else 1
        savers = [first] + [AsyncPostgresSaver(pool) for _ in range(count - 1)]
        savers = [savers[w % count] for w in range(args.concurrency)]
        payload = Payload(args.size, args.channels, args.shape, args.encoding)
        workers = await prepare(args, savers, payload)

        record = Record()
        measure_from = time.perf_counter() + args.warmup
        stop_at = measure_from + args.duration
        await asyncio.gather(*(drive(w, measure_from, stop_at, record) for w in workers))
        return record
    finally:
        await pool.close()


# --- report ---


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted latencies, in milliseconds."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return round(ordered[rank - 1] * 1000, 3)


def report(args: argparse.Namespace, record: Record) -> dict[str, Any]:
    count = len(record.latencies)
    seconds = max(record.ends) - min(record.starts) if count else 0.0
    ordered = sorted(record.latencies)
    return {
        "op": args.op,
        "size": args.size,
        "channels": args.channels,
        "concurrency": args.concurrency,
        "savers": args.savers,
        "shape": args.shape,
        "encoding": args.encoding,
        "count": count,
        "seconds": round(seconds, 3),
        "rate": round(count / seconds, 1) if seconds else 0.0,
        "mb_per_s": round(record.bytes / seconds / 1e6, 3) if seconds else 0.0,
        "p50_ms": percentile(ordered, 0.50),
        "p90_ms": percentile(ordered, 0.90),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": percentile(ordered, 1.0),
        "errors": record.errors,
        "versions": {
            name: version(name)
            for name in ("langgraph-checkpoint-postgres", "langgraph-checkpoint", "psycopg")
        },
    }


def summary(r: dict[str, Any]) -> str:
    return (
        f"{r['op']} size={r['size']} channels={r['channels']} c={r['concurrency']} "
        f"savers={r['savers']}: {r['count']} calls in {r['seconds']} s, {r['rate']} /s, "
        f"{r['mb_per_s']} MB/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
        f"{r['errors']} errors"
    )


def main() -> int:
    args = parse_args(sys.argv[1:])
    result = report(args, asyncio.run(run(args)))
    print(json.dumps(result))
    print(summary(result), file=sys.stderr)
    return 1 if result["errors"] or not result["count"] else 0


if __name__ == "__main__":
    sys.exit(main())
