"""Errors raised by the checkpointd client: one class per gRPC status a caller may act on."""

from __future__ import annotations

import grpc

# Response metadata that carries a branch's head when a write was refused with ABORTED.
CURRENT_HEAD_METADATA = "ckpt-current-head"


class CheckpointdError(Exception):
    """A call to checkpointd failed. `code` is the gRPC status, `details` the server's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


class InvalidArgument(CheckpointdError):
    """The request was malformed; the message names the field."""


class NotFound(CheckpointdError):
    """The session, checkpoint or branch does not exist."""


class AlreadyExists(CheckpointdError):
    """The branch, tag or session to create exists already."""


class Aborted(CheckpointdError):
    """The branch moved: the write named a parent that is no longer its head."""

    def __init__(
        self, method: str, code: grpc.StatusCode, details: str, current_head: str | None
    ) -> None:
        super().__init__(method, code, details)
        # The branch's head when the write was refused; None when the server did not say.
        self.current_head = current_head


class FailedPrecondition(CheckpointdError):
    """The operation is not allowed in the current state (deleting a head, a diverged import)."""


class ResourceExhausted(CheckpointdError):
    """A message or value is over the server's limit."""


class DataLoss(CheckpointdError):
    """Stored data is missing or damaged."""


class Unavailable(CheckpointdError):
    """The server or its storage cannot be reached now; the call may be retried."""


_BY_CODE: dict[grpc.StatusCode, type[CheckpointdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def from_rpc_error(method: str, err: grpc.RpcError) -> CheckpointdError:
    """The typed error for a failed call (sync or asyncio)."""
    code = err.code()
    details = err.details() or ""
    if code == grpc.StatusCode.ABORTED:
        return Aborted(method, code, details, _current_head(err))
    return _BY_CODE.get(code, CheckpointdError)(method, code, details)


def _current_head(err: grpc.RpcError) -> str | None:
    for metadata in (err.trailing_metadata(), err.initial_metadata()):
        for key, value in metadata or ():
            if key == CURRENT_HEAD_METADATA and value:
                return value
    return None
