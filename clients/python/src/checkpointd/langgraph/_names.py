"""How LangGraph's names become checkpointd's: a thread is a session, a namespace a branch.

Session ids and branch names allow 1-256 bytes of `A-Z a-z 0-9 . _ - : @ /`. Both mappings are
injective (two different threads never share a session, two namespaces never share a branch)
and reversible, so listings can name the thread and namespace of what they find.
"""

from __future__ import annotations

import re

# Sessions this checkpointer writes start with this, so that they are told apart from the
# sessions other clients keep in the same deployment.
DEFAULT_SESSION_PREFIX = "langgraph/"
MAX_NAME_BYTES = 256

# The root namespace ("") is the session's `main` branch.
ROOT_BRANCH = "main"
# A namespace whose parts use only name characters: "ns/" + the namespace with LangGraph's
# separator "|" turned into "/" (so "parent:1|child:2" is "ns/parent:1/child:2").
PLAIN_NS = "ns/"
# Any other namespace: "nsx/" + the hex of its UTF-8 bytes.
HEX_NS = "nsx/"
# The branch holding pending writes added to a checkpoint that is no longer the newest of its
# namespace: "w/" + the namespace's branch (see README, "Pending writes").
SIDE_PREFIX = "w/"
# A thread id outside the name characters (or starting with "@") becomes "@" + hex.
HEX_THREAD = "@"

_NAME_CHARS = re.compile(r"[A-Za-z0-9._\-:@/]+")
_NS_CHARS = re.compile(r"[A-Za-z0-9._\-:@|]+")


def session_for(thread_id: str, prefix: str = DEFAULT_SESSION_PREFIX) -> str:
    """The session that holds `thread_id`."""
    thread = str(thread_id)
    if _NAME_CHARS.fullmatch(thread) and not thread.startswith(HEX_THREAD):
        name = prefix + thread
    else:
        name = prefix + HEX_THREAD + thread.encode().hex()
    return _checked("thread_id", thread, name)


def thread_for(session_id: str, prefix: str = DEFAULT_SESSION_PREFIX) -> str | None:
    """The thread a session holds, or None when the session is not one of ours."""
    if not session_id.startswith(prefix):
        return None
    rest = session_id[len(prefix) :]
    if rest.startswith(HEX_THREAD):
        return bytes.fromhex(rest[len(HEX_THREAD) :]).decode()
    return rest


def branch_for(checkpoint_ns: str) -> str:
    """The branch that holds namespace `checkpoint_ns` of a thread."""
    if checkpoint_ns == "":
        return ROOT_BRANCH
    if _NS_CHARS.fullmatch(checkpoint_ns):
        name = PLAIN_NS + checkpoint_ns.replace("|", "/")
    else:
        name = HEX_NS + checkpoint_ns.encode().hex()
    return _checked("checkpoint_ns", checkpoint_ns, name)


def side_branch_for(branch: str) -> str:
    """The branch for late pending writes of `branch`'s older checkpoints."""
    return _checked("checkpoint_ns", branch, SIDE_PREFIX + branch)


def _checked(what: str, original: str, name: str) -> str:
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(
            f"{what} {original!r} is too long for checkpointd: it becomes {len(name.encode())} "
            f"bytes, the limit is {MAX_NAME_BYTES}"
        )
    return name
