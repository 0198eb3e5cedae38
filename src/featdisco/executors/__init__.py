"""Executors: where featurize and embed run (local asyncio, or Ray Data)."""

from featdisco.executors.base import EXECUTORS, Executor, make_executor

__all__ = ["EXECUTORS", "Executor", "make_executor"]
