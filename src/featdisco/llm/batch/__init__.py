"""Provider batch APIs (OpenAI Batch, Anthropic Message Batches) behind the engine's
interface: ``featdisco run --batch``. See :mod:`featdisco.llm.batch.engine`."""

from featdisco.llm.batch.engine import BatchEngine, make_batch_api
from featdisco.llm.batch.fill import FillingEngine
from featdisco.llm.batch.store import BatchStore

__all__ = ["BatchEngine", "BatchStore", "FillingEngine", "make_batch_api"]
