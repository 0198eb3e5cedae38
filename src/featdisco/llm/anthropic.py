"""Backend for Anthropic's Messages API, on the official ``anthropic`` SDK (an extra:
``pip install 'featdisco[anthropic]'``).

Structured output goes through a forced tool call by default: the schema becomes the
tool's ``input_schema`` and the model must call it, which is how Anthropic models give
reliably shaped JSON. ``json_mode='prompt'`` puts the schema in the system prompt instead.
The SDK sends the calls on its own HTTP client, one per event loop with a pool sized to
the engine's concurrency. Its retries are off and errors map to the same
:class:`LLMError` reasons as the openai backend, so the engine treats both alike.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any, Literal

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import (
    LLMRequest,
    LLMResponse,
    PerLoop,
    Usage,
    schema_instruction,
    sdk_error,
)

JSON_MODES: tuple[str, ...] = ("tool", "prompt")


def _sdk() -> Any:
    try:
        import anthropic
    except ImportError as e:
        raise FeatdiscoError("the anthropic backend needs the anthropic SDK: "
                             "pip install 'featdisco[anthropic]'") from e
    return anthropic


class AnthropicLLM:
    """Calls ``model`` through the Messages API; the key comes from ``api_key`` or
    ``ANTHROPIC_API_KEY`` and is never logged."""

    name = "anthropic"
    closes_per_loop = True  # aclose frees the running loop's client; reopened on use

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 json_mode: Literal["tool", "prompt"] = "tool", concurrency: int = 64,
                 timeout: float = 60.0) -> None:
        if json_mode not in JSON_MODES:
            raise FeatdiscoError(f"unknown JSON mode {json_mode!r} for anthropic; choose "
                                 f"{' or '.join(JSON_MODES)}")
        self._sdk = _sdk()
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise FeatdiscoError("the anthropic backend needs ANTHROPIC_API_KEY")
        self._api_key = key
        self.model = model
        self.base_url = base_url
        self.json_mode = json_mode
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        # Recent SDKs (and the models they target) dropped temperature/top_p; follow the
        # installed SDK rather than send what its API version rejects.
        create = self._sdk.resources.messages.AsyncMessages.create
        self._takes_sampling = "temperature" in inspect.signature(create).parameters
        self._clients: PerLoop[Any] = PerLoop(self._make_client)

    def __repr__(self) -> str:
        return f"AnthropicLLM(model={self.model!r}, json_mode={self.json_mode!r})"

    def _make_client(self) -> Any:
        sdk = self._sdk
        limits = type(sdk.DEFAULT_CONNECTION_LIMITS)(max_connections=self.concurrency,
                                                     max_keepalive_connections=self.concurrency)
        return sdk.AsyncAnthropic(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                  timeout=self.timeout,
                                  http_client=sdk.DefaultAsyncHttpxClient(limits=limits))

    @property
    def api_key(self) -> str:
        """The key calls go with (the batch API's too); never logged."""
        return self._api_key

    @property
    def sdk(self) -> Any:
        """The anthropic SDK module (an optional extra, loaded when the backend is made)."""
        return self._sdk

    def request_params(self, request: LLMRequest) -> dict[str, Any]:
        """The Messages API body for ``request``: one call's, and a batch item's params."""
        s = request.sampling
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        params: dict[str, Any] = {
            "model": self.model, "max_tokens": s.max_tokens,
            "messages": [{"role": m.role, "content": m.content}
                         for m in request.messages if m.role != "system"]}
        if self._takes_sampling:
            params["temperature"] = s.temperature
            if s.top_p is not None:
                params["top_p"] = s.top_p
        schema = request.schema
        if schema is not None:
            if self.json_mode == "tool" and schema.get("type") == "object":
                params["tools"] = [{"name": request.schema_name, "input_schema": schema,
                                    "description": "Record the reply in this exact shape."}]
                params["tool_choice"] = {"type": "tool", "name": request.schema_name}
            else:
                system = (system + "\n\n" if system else "") + schema_instruction(schema)
        if system:
            params["system"] = system
        return params

    async def complete(self, request: LLMRequest) -> LLMResponse:
        sdk = self._sdk
        try:
            msg = await self._clients.get().messages.create(**self.request_params(request))
        except sdk.APIError as e:
            raise sdk_error(sdk, e, (self._api_key,)) from e
        return read_message(msg)

    async def aclose(self) -> None:
        """Close the connections opened on the running loop."""
        await self._clients.aclose()


def read_message(msg: Any) -> LLMResponse:
    """A Messages API reply as an :class:`LLMResponse`: a forced tool call's input as JSON
    text, else the text blocks. The batch reader uses it too, so both read replies alike."""
    text = ""
    for block in msg.content:
        if block.type == "tool_use":
            text = json.dumps(block.input, ensure_ascii=False)
            break
        if block.type == "text":
            text += block.text
    refusal = text or "the model refused" if msg.stop_reason == "refusal" else None
    usage = Usage(msg.usage.input_tokens or 0, msg.usage.output_tokens or 0)
    model = getattr(msg, "model", None)
    return LLMResponse(text=text, usage=usage, finish_reason=msg.stop_reason, refusal=refusal,
                       model=model if isinstance(model, str) else None)
