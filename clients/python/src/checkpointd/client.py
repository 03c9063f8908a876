"""`Client` (blocking) and `AsyncClient` (asyncio): typed calls to a checkpointd server.

Both execute the calls described in `checkpointd._calls`; every failure is raised as a
`checkpointd.errors.CheckpointdError` subclass named after its gRPC status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from checkpointd import _calls as calls
from checkpointd._pb import checkpoint_pb2_grpc as pb_grpc
from checkpointd.errors import from_rpc_error
from checkpointd.types import Branch, Change, Checkpoint, DiffEntry, Session, State

# Attempts in all for a call that may be repeated (a create, which carries a request id).
RETRY_ATTEMPTS = 4


def _should_retry(call: calls.Call[Any], err: grpc.RpcError, attempt: int) -> bool:
    """Whether to send `call` again after `err`: only a repeatable call, only while attempts
    remain, and only when the server was unreachable or the connection broke."""
    if not call.retry_unavailable or attempt >= RETRY_ATTEMPTS:
        return False
    return err.code() == grpc.StatusCode.UNAVAILABLE


def _retry_pause(attempt: int) -> float:
    """50 ms, then 200 ms, then 800 ms."""
    return 0.05 * 4 ** (attempt - 1)


T = TypeVar("T")

DEFAULT_TARGET = "127.0.0.1:7777"
# Seconds a call may take before it fails with DEADLINE_EXCEEDED.
DEFAULT_TIMEOUT = 30.0
# Diffs with values and large states come in big messages; gRPC's default is 4 MiB.
MAX_RECEIVE_BYTES = 256 * 1024 * 1024
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]


class Client:
    """A blocking client. Safe to share between threads; `close()` (or `with`) ends it."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float = DEFAULT_TIMEOUT):
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.CheckpointServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def run(self, call: calls.Call[T]) -> T:
        """Makes one call and returns its parsed answer. A call that may be repeated is sent
        again, after a pause, when the server was unreachable or the connection broke."""
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return self._run_once(call)
            except grpc.RpcError as err:
                if not _should_retry(call, err, attempt):
                    raise from_rpc_error(call.method, err) from None
            time.sleep(_retry_pause(attempt))
        raise AssertionError("unreachable: the last attempt raises")

    def _run_once(self, call: calls.Call[T]) -> T:
        rpc = getattr(self._stub, call.method)
        if call.shape == "server_stream":
            return call.parse(list(rpc(call.request, timeout=self.timeout)))
        if call.shape == "client_stream":
            return call.parse(rpc(iter(call.request), timeout=self.timeout))
        return call.parse(rpc(call.request, timeout=self.timeout))

    def create(self, session_id: str, changes: Sequence[Change], **kw: Any) -> Checkpoint:
        """See `checkpointd._calls.create` for the keyword arguments."""
        return self.run(calls.create(session_id, changes, **kw))

    def get_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return self.run(calls.get_checkpoint(checkpoint_id))

    def read_state(self, checkpoint_id: str | None = None, **kw: Any) -> State:
        """See `checkpointd._calls.read_state`."""
        return self.run(calls.read_state(checkpoint_id, **kw))

    def list_checkpoints(self, session_id: str, **filters: Any) -> Iterator[Checkpoint]:
        """Every checkpoint of a session matching the filters, newest first, page by page."""
        token = ""
        while True:
            page = self.run(calls.list_checkpoints(session_id, page_token=token, **filters))
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def list_sessions(self) -> Iterator[Session]:
        token = ""
        while True:
            page = self.run(calls.list_sessions(page_token=token))
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        self.run(calls.delete_checkpoint(checkpoint_id))

    def delete_session(self, session_id: str) -> int:
        return self.run(calls.delete_session(session_id))

    def get_branch(self, session_id: str, name: str) -> Branch:
        return self.run(calls.get_branch(session_id, name))

    def list_branches(self, session_id: str) -> list[Branch]:
        return self.run(calls.list_branches(session_id))

    def create_branch(self, session_id: str, name: str, from_checkpoint_id: str) -> Branch:
        return self.run(calls.create_branch(session_id, name, from_checkpoint_id))

    def reset_branch(
        self, session_id: str, name: str, checkpoint_id: str, expected_head: str
    ) -> Branch:
        return self.run(calls.reset_branch(session_id, name, checkpoint_id, expected_head))

    def delete_branch(self, session_id: str, name: str, expected_head: str = "") -> None:
        self.run(calls.delete_branch(session_id, name, expected_head))

    def fork_session(self, checkpoint_id: str, new_session_id: str) -> Checkpoint:
        return self.run(calls.fork_session(checkpoint_id, new_session_id))

    def diff(self, from_id: str, to_id: str, *, include_values: bool = False) -> list[DiffEntry]:
        """Every key that differs between two checkpoints, in key order."""
        out: list[DiffEntry] = []
        token = ""
        while True:
            call = calls.diff(from_id, to_id, include_values=include_values, page_token=token)
            page = self.run(call)
            out.extend(page.items)
            token = page.next_page_token
            if not token:
                return out


class AsyncClient:
    """The asyncio client. Create it inside the event loop that uses it."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float = DEFAULT_TIMEOUT):
        self.target = target
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.CheckpointServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def run(self, call: calls.Call[T]) -> T:
        """Makes one call and returns its parsed answer, retried as `Client.run` does."""
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return await self._run_once(call)
            except grpc.RpcError as err:
                if not _should_retry(call, err, attempt):
                    raise from_rpc_error(call.method, err) from None
            await asyncio.sleep(_retry_pause(attempt))
        raise AssertionError("unreachable: the last attempt raises")

    async def _run_once(self, call: calls.Call[T]) -> T:
        rpc = getattr(self._stub, call.method)
        if call.shape == "server_stream":
            parts = [part async for part in rpc(call.request, timeout=self.timeout)]
            return call.parse(parts)
        if call.shape == "client_stream":
            return call.parse(await rpc(iter(call.request), timeout=self.timeout))
        return call.parse(await rpc(call.request, timeout=self.timeout))

    async def create(self, session_id: str, changes: Sequence[Change], **kw: Any) -> Checkpoint:
        """See `checkpointd._calls.create` for the keyword arguments."""
        return await self.run(calls.create(session_id, changes, **kw))

    async def get_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return await self.run(calls.get_checkpoint(checkpoint_id))

    async def read_state(self, checkpoint_id: str | None = None, **kw: Any) -> State:
        """See `checkpointd._calls.read_state`."""
        return await self.run(calls.read_state(checkpoint_id, **kw))

    async def list_checkpoints(self, session_id: str, **filters: Any) -> AsyncIterator[Checkpoint]:
        """Every checkpoint of a session matching the filters, newest first, page by page."""
        token = ""
        while True:
            call = calls.list_checkpoints(session_id, page_token=token, **filters)
            page = await self.run(call)
            for item in page.items:
                yield item
            token = page.next_page_token
            if not token:
                return

    async def delete_checkpoint(self, checkpoint_id: str) -> None:
        await self.run(calls.delete_checkpoint(checkpoint_id))

    async def delete_session(self, session_id: str) -> int:
        return await self.run(calls.delete_session(session_id))

    async def get_branch(self, session_id: str, name: str) -> Branch:
        return await self.run(calls.get_branch(session_id, name))

    async def list_branches(self, session_id: str) -> list[Branch]:
        return await self.run(calls.list_branches(session_id))

    async def fork_session(self, checkpoint_id: str, new_session_id: str) -> Checkpoint:
        return await self.run(calls.fork_session(checkpoint_id, new_session_id))
