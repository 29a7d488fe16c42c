"""Any OpenAI-compatible completions server, e.g. a running ``vllm serve``.

Requests go out concurrently from a thread pool and are yielded as they finish.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError
from evalkit.models.base import Backend, Completion, GenRequest


@dataclass
class OpenAIBackend(Backend):
    client: Any = None
    model: str = ""
    adapter_models: dict | None = None
    concurrency: int = 16

    @classmethod
    def start(cls, checkpoint: Checkpoint, adapters: Sequence[Checkpoint] = (), *,
              base_url: str | None = None, api_key: str = "EMPTY",
              served_model_name: str | None = None, adapter_model_names: Sequence[str] = (),
              concurrency: int = 16, timeout: float = 600.0, **_: Any) -> OpenAIBackend:
        if not base_url:
            raise EvalkitError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=2)
        try:
            served = [m.id for m in client.models.list()]
        except openai.APIError as exc:
            raise EvalkitError(f"cannot reach the server at {base_url}: {exc}") from None
        # One server may serve both sides of a comparison: each checkpoint asks for its own name.
        model = served_model_name or (checkpoint.spec if checkpoint.spec in served
                                      else served[0] if served else "")
        if model not in served:
            raise EvalkitError(f"server at {base_url} does not serve '{model}' (serves: {served})")
        if len(adapter_model_names) != len(adapters):
            raise EvalkitError("the openai backend serves one model per checkpoint; evaluate an "
                               "adapter served by the server under its served name instead")
        return cls(name="openai", version=f"openai=={metadata.version('openai')}",
                   options={"base_url": base_url, "model": model, "concurrency": concurrency},
                   client=client, model=model, concurrency=concurrency,
                   adapter_models={a.fingerprint: n for a, n in
                                   zip(adapters, adapter_model_names, strict=True)})

    def generate(self, requests: Sequence[GenRequest]) -> Iterator[tuple[int, list[Completion]]]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(self._one, r): i for i, r in enumerate(requests)}
            try:
                for fut in as_completed(futures):
                    yield futures[fut], fut.result()
            finally:
                for fut in futures:
                    fut.cancel()

    def _one(self, r: GenRequest) -> list[Completion]:
        import openai

        model = self.model if r.adapter is None else self.adapter_models[r.adapter.fingerprint]
        try:
            resp = self.client.completions.create(
                model=model, prompt=r.prompt, max_tokens=r.max_tokens, temperature=r.temperature,
                top_p=r.top_p, n=r.n, stop=list(r.stop) or None, seed=r.seed)
        except openai.APIError as exc:
            raise EvalkitError(f"server error from {self.options['base_url']}: {exc}") from None
        usage = resp.usage
        n_prompt = usage.prompt_tokens if usage else 0
        per_choice = (usage.completion_tokens // max(r.n, 1)) if usage else 0
        choices = sorted(resp.choices, key=lambda c: c.index)
        return [Completion(text=c.text, finish_reason="length" if c.finish_reason == "length"
                           else "stop", n_prompt_tokens=n_prompt, n_completion_tokens=per_choice)
                for c in choices]
