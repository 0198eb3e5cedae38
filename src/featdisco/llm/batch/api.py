"""What a provider batch API must offer the batch engine, and the types that cross it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from featdisco.llm.base import LLMError, LLMRequest, LLMResponse

# Both providers bill batch calls at half their online price.
BATCH_PRICE_FACTOR = 0.5


@dataclass(frozen=True, slots=True)
class BatchState:
    """A poll's answer: ``done`` once no more results will come; ``state`` the provider's
    word for it; ``leftover_reason`` what to record for requests without a result
    (``batch-expired``, ``batch-cancelled``, ``batch-failed``), with ``detail``."""

    done: bool
    state: str
    leftover_reason: str = "batch-missing"
    detail: str | None = None


class BatchAPI(Protocol):
    """One provider's batch endpoints. ``max_requests`` and ``max_bytes`` bound one batch
    (the engine cuts chunks to fit both)."""

    provider: str
    max_requests: int
    max_bytes: int

    def line(self, key: str, request: LLMRequest) -> bytes:
        """The request as the provider's batch item, serialised (its size counts)."""
        ...

    async def submit(self, lines: list[bytes]) -> str:
        """Create one batch of these items; its id."""
        ...

    async def poll(self, batch_id: str) -> BatchState: ...

    def results(self, batch_id: str) -> AsyncIterator[tuple[str, LLMResponse | LLMError]]:
        """Every result the provider holds for the batch, as (custom_id, reply or error)."""
        ...

    async def aclose(self) -> None: ...
