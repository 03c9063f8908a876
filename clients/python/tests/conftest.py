"""Fixtures: one real checkpointd per test session, and clients and savers connected to it.

CHECKPOINTD_BIN names the server binary (default: the repository's target/debug/checkpointd);
CHECKPOINTD_DATABASE, when set, is the PostgreSQL URL the server keeps its catalog in (default:
its embedded SQLite).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from checkpointd import AsyncClient, Client
from checkpointd.langgraph import CheckpointdSaver
from checkpointd.testing import LocalServer

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def server() -> Iterator[LocalServer]:
    binary = os.environ.get("CHECKPOINTD_BIN") or REPO / "target" / "debug" / "checkpointd"
    database = os.environ.get("CHECKPOINTD_DATABASE") or None
    with LocalServer(binary, database=database) as running:
        yield running


@pytest.fixture
def client(server: LocalServer) -> Iterator[Client]:
    with Client(server.target, timeout=20) as connected:
        yield connected


@pytest.fixture
async def aclient(server: LocalServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.target, timeout=20) as connected:
        yield connected


@pytest.fixture
def saver(server: LocalServer) -> Iterator[CheckpointdSaver]:
    opened = CheckpointdSaver(server.target, timeout=20)
    yield opened
    opened.close()


@pytest.fixture
async def asaver(server: LocalServer) -> AsyncIterator[CheckpointdSaver]:
    opened = CheckpointdSaver(server.target, timeout=20)
    yield opened
    await opened.aclose()
