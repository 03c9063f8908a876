"""Python client for checkpointd, a gRPC checkpoint service for AI-agent sessions.

`Client` blocks, `AsyncClient` runs on asyncio; `checkpointd.langgraph.CheckpointdSaver` is a
LangGraph checkpointer built on them (install the `langgraph` extra).
"""

from checkpointd.client import AsyncClient, Client
from checkpointd.errors import (
    Aborted,
    AlreadyExists,
    CheckpointdError,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from checkpointd.types import Branch, Checkpoint, Delete, DiffEntry, Put, Session, State, Summary

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "Branch",
    "Checkpoint",
    "CheckpointdError",
    "Client",
    "DataLoss",
    "Delete",
    "DiffEntry",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Put",
    "ResourceExhausted",
    "Session",
    "State",
    "Summary",
    "Unavailable",
]
