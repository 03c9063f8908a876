"""`CheckpointdSaver`: LangGraph's checkpointer interface, blocking and asyncio, on checkpointd."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from checkpointd.client import DEFAULT_TARGET, DEFAULT_TIMEOUT, AsyncClient, Client
from checkpointd.errors import CheckpointdError
from checkpointd.langgraph import _admin as admin
from checkpointd.langgraph import _plans as plans
from checkpointd.langgraph._names import DEFAULT_SESSION_PREFIX

T = TypeVar("T")

# Seconds put_writes waits for the checkpoint it names to be stored (see _plans.Context).
DEFAULT_POLL_SECONDS = 10.0
# Writes to one thread through one saver take turns: LangGraph saves the writes of a step's
# parallel tasks concurrently, and each is a new head of the same branch, so without turns all
# but one would be refused and rebuilt, over and over (64 tasks exhausted the retries). Threads
# share this many locks.
WRITE_LOCK_STRIPES = 64


class CheckpointdSaver(BaseCheckpointSaver[int]):
    """Stores LangGraph checkpoints in a checkpointd server.

    Every method exists blocking (`put`, `get_tuple`...) and for asyncio (`aput`,
    `aget_tuple`...). The blocking client connects on first use; the asyncio one is made
    inside the event loop that uses the saver (again if a later call runs in another loop), and
    `aclose()` closes it when run in that loop.

        saver = CheckpointdSaver("127.0.0.1:7777")
        graph = builder.compile(checkpointer=saver)
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        session_prefix: str = DEFAULT_SESSION_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.target = target
        self.timeout = timeout
        self._ctx = plans.Context(self.serde, session_prefix, poll_seconds)
        self._client: Client | None = None
        # One asyncio client per event loop: a grpc.aio channel belongs to the loop it was made
        # in, and threads may each run their own loop with the same saver.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient]
        self._aclients = weakref.WeakKeyDictionary()
        self._aclients_guard = threading.Lock()
        self._turns = [threading.Lock() for _ in range(WRITE_LOCK_STRIPES)]
        self._aturns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[asyncio.Lock]]
        self._aturns = weakref.WeakKeyDictionary()
        self._aturns_guard = threading.Lock()

    # ---- drivers: run a plan's calls with one client or the other ----------------------------

    def _run(self, plan: plans.Plan[T], turn: threading.Lock | None = None) -> T:
        """Runs a plan; with `turn`, holds it throughout except while the plan sleeps."""
        if self._client is None:
            self._client = Client(self.target, timeout=self.timeout)
        client, reply, error = self._client, None, None
        if turn is not None:
            turn.acquire()
        try:
            while True:
                try:
                    step = plan.throw(error) if error is not None else plan.send(reply)
                except StopIteration as done:
                    return done.value
                reply, error = None, None
                if isinstance(step, plans.Sleep):
                    _sleep_without(turn, step.seconds)
                    continue
                try:
                    reply = client.run(step)
                except CheckpointdError as err:
                    error = err
        finally:
            if turn is not None:
                turn.release()

    async def _arun(self, plan: plans.Plan[T], turn: asyncio.Lock | None = None) -> T:
        """Runs a plan; with `turn`, holds it throughout except while the plan sleeps."""
        client, reply, error = self._async_client(), None, None
        if turn is not None:
            await turn.acquire()
        try:
            while True:
                try:
                    step = plan.throw(error) if error is not None else plan.send(reply)
                except StopIteration as done:
                    return done.value
                reply, error = None, None
                if isinstance(step, plans.Sleep):
                    await _asleep_without(turn, step.seconds)
                    continue
                try:
                    reply = await client.run(step)
                except CheckpointdError as err:
                    error = err
        finally:
            if turn is not None:
                turn.release()

    def _turn(self, config: RunnableConfig) -> threading.Lock:
        """The lock blocking writes to `config`'s thread take turns on."""
        return self._turns[_stripe(config)]

    def _aturn(self, config: RunnableConfig) -> asyncio.Lock:
        """The same for asyncio: the running loop's lock for `config`'s thread."""
        loop = asyncio.get_running_loop()
        with self._aturns_guard:
            locks = self._aturns.get(loop)
            if locks is None:
                locks = [asyncio.Lock() for _ in range(WRITE_LOCK_STRIPES)]
                self._aturns[loop] = locks
        return locks[_stripe(config)]

    def _async_client(self) -> AsyncClient:
        """The asyncio client of the running loop, made on its first use there. A saver used
        from a new loop (a second `asyncio.run`, or a loop per thread) gets a client of its
        own; a finished loop's client goes with the loop."""
        loop = asyncio.get_running_loop()
        with self._aclients_guard:
            client = self._aclients.get(loop)
            if client is None:
                client = AsyncClient(self.target, timeout=self.timeout)
                self._aclients[loop] = client
            return client

    def close(self) -> None:
        """Closes the blocking connection."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Closes both connections; run it in the loop that used the saver."""
        self.close()
        with self._aclients_guard:
            client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    # ---- blocking ----------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(plans.get_tuple(self._ctx, config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        plan = plans.list_versions(self._ctx, config, filter=filter, before=before, limit=limit)
        for thread, version in self._run(plan):
            found = self._run(plans.read_tuple(self._ctx, thread, version))
            if found is not None:
                yield found

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        plan = plans.put(self._ctx, config, dict(checkpoint), metadata, new_versions)
        return self._run(plan, self._turn(config))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        plan = plans.put_writes(self._ctx, config, writes, task_id, task_path)
        self._run(plan, self._turn(config))

    def delete_thread(self, thread_id: str) -> None:
        self._run(admin.delete_thread(self._ctx, thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(admin.delete_for_runs(self._ctx, run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(admin.copy_thread(self._ctx, source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(admin.prune(self._ctx, thread_ids, strategy))

    # ---- asyncio -----------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun(plans.get_tuple(self._ctx, config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        plan = plans.list_versions(self._ctx, config, filter=filter, before=before, limit=limit)
        for thread, version in await self._arun(plan):
            found = await self._arun(plans.read_tuple(self._ctx, thread, version))
            if found is not None:
                yield found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        plan = plans.put(self._ctx, config, dict(checkpoint), metadata, new_versions)
        return await self._arun(plan, self._aturn(config))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        plan = plans.put_writes(self._ctx, config, writes, task_id, task_path)
        await self._arun(plan, self._aturn(config))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(admin.delete_thread(self._ctx, thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(admin.delete_for_runs(self._ctx, run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(admin.copy_thread(self._ctx, source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._arun(admin.prune(self._ctx, thread_ids, strategy))


def _stripe(config: RunnableConfig) -> int:
    return hash(str(config["configurable"]["thread_id"])) % WRITE_LOCK_STRIPES


def _sleep_without(turn: threading.Lock | None, seconds: float) -> None:
    """Sleeps with `turn` released, so that the put a waiting put_writes needs can run."""
    if turn is None:
        time.sleep(seconds)
        return
    turn.release()
    try:
        time.sleep(seconds)
    finally:
        turn.acquire()


async def _asleep_without(turn: asyncio.Lock | None, seconds: float) -> None:
    if turn is None:
        await asyncio.sleep(seconds)
        return
    turn.release()
    try:
        await asyncio.sleep(seconds)
    finally:
        await turn.acquire()
