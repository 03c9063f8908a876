"""LangGraph's own conformance suite (langgraph-checkpoint-conformance) against a real server.

Every test of every capability runs as a pytest test, twice: through the saver's asyncio
methods, and through its blocking ones (`BlockingBacked` calls them from a worker thread).
`test_validate_reports_full_conformance` then runs the suite's own runner, which detects the
capabilities the saver claims, and requires every one of them to pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.spec import (
    test_copy_thread,
    test_delete_for_runs,
    test_delete_thread,
    test_get_tuple,
    test_list,
    test_prune,
    test_put,
    test_put_writes,
)

from checkpointd.langgraph import CheckpointdSaver
from checkpointd.testing import LocalServer

# Each capability's tests, as the suite lists them.
SUITE: dict[str, list[Callable[..., Any]]] = {
    "put": test_put.ALL_PUT_TESTS,
    "put_writes": test_put_writes.ALL_PUT_WRITES_TESTS,
    "get_tuple": test_get_tuple.ALL_GET_TUPLE_TESTS,
    "list": test_list.ALL_LIST_TESTS,
    "delete_thread": test_delete_thread.ALL_DELETE_THREAD_TESTS,
    "delete_for_runs": test_delete_for_runs.ALL_DELETE_FOR_RUNS_TESTS,
    "copy_thread": test_copy_thread.ALL_COPY_THREAD_TESTS,
    "prune": test_prune.ALL_PRUNE_TESTS,
}
CASES = [(cap, fn) for cap, fns in SUITE.items() for fn in fns]


class BlockingBacked(CheckpointdSaver):
    """The saver with its asyncio methods answered by its blocking ones, on a worker thread, so
    that the suite exercises the blocking code path."""

    async def aget_tuple(self, config: Any) -> Any:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: Any, **kw: Any) -> AsyncIterator[Any]:
        for found in await asyncio.to_thread(lambda: list(self.list(config, **kw))):
            yield found

    async def aput(self, *args: Any) -> Any:
        return await asyncio.to_thread(self.put, *args)

    async def aput_writes(self, *args: Any, **kw: Any) -> None:
        await asyncio.to_thread(self.put_writes, *args, **kw)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Any) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source: str, target: str) -> None:
        await asyncio.to_thread(self.copy_thread, source, target)

    async def aprune(self, thread_ids: Any, *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


def test_the_suite_lists_every_capability() -> None:
    # Guards this file against a suite version that adds a capability we would not run.
    assert set(SUITE) == {cap.value for cap in ALL_CAPABILITIES}
    assert len(CASES) == 81


@pytest.mark.parametrize("kind", ["asyncio", "blocking"])
@pytest.mark.parametrize(("capability", "case"), CASES, ids=[f"{c}-{f.__name__}" for c, f in CASES])
async def test_conformance(
    server: LocalServer, kind: str, capability: str, case: Callable[..., Any]
) -> None:
    saver_type = CheckpointdSaver if kind == "asyncio" else BlockingBacked
    saver = saver_type(server.target, timeout=20)
    try:
        await case(saver)
    finally:
        await saver.aclose()


async def test_validate_reports_full_conformance(server: LocalServer) -> None:
    @checkpointer_test(name="CheckpointdSaver")
    async def factory() -> AsyncIterator[CheckpointdSaver]:
        saver = CheckpointdSaver(server.target, timeout=20)
        yield saver
        await saver.aclose()

    report = await validate(factory)
    report.print_report()
    for cap in ALL_CAPABILITIES:
        result = report.results[cap.value]
        assert result.detected, f"{cap.value}: the saver does not claim it"
        assert result.tests_failed == 0, f"{cap.value}: {result.failures}"
        assert result.tests_passed == len(SUITE[cap.value]), cap.value
    assert report.conformance_level() == "FULL"
