"""A LangGraph checkpointer that stores in checkpointd: `CheckpointdSaver`.

Needs the `langgraph` extra (`pip install "clients/python[langgraph]"`). How LangGraph's
threads, namespaces, checkpoints and pending writes map onto checkpointd is in README.md.
"""

from checkpointd.langgraph._plans import ConflictError, NotFoundError
from checkpointd.langgraph.saver import CheckpointdSaver

__all__ = ["CheckpointdSaver", "ConflictError", "NotFoundError"]
