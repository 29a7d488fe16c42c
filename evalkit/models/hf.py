"""transformers ``generate``: the reference backend, batched with left padding.

Greedy results must match vLLM's on the same prompts (a test checks agreement on the embedded
model), so prompts are tokenized exactly as vLLM does (the tokenizer's default special tokens)
and completions are cut at the earliest stop sequence, as vLLM and lm-eval do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from evalkit.checkpoints import Checkpoint
from evalkit.models.base import (
    Backend,
    Completion,
    GenRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    cut_at_stop,
    score_requests,
)
from evalkit.models.engine_log import EngineLog

# Most logit rows (positions x batch) one loglikelihood forward pass keeps: 8192 x a 50k vocab
# in float32 is 1.6 GB.
_LL_POSITIONS = 8192


@dataclass
class HFBackend(Backend):
    model: Any = None
    tokenizer: Any = None
    adapter_names: dict | None = None
    batch_size: int = 16
    device: str = "cpu"
    log: EngineLog | None = None

    @classmethod
    def start(cls, checkpoint: Checkpoint, adapters: Sequence[Checkpoint] = (), *,
              batch_size: int = 16, device: str | None = None, dtype: str = "auto",
              **_: Any) -> HFBackend:
        # transformers' warnings and loading bars go to the run's engine log, as vLLM's do
        log = EngineLog.open(f"transformers model for {checkpoint.spec}")
        with log.closed_on_error(), log.starting("transformers"):
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
            model = AutoModelForCausalLM.from_pretrained(checkpoint.path, dtype=torch_dtype)
            names = {}
            if adapters:
                from peft import PeftModel

                for i, a in enumerate(adapters):
                    name = f"adapter-{i + 1}"
                    if i == 0:
                        model = PeftModel.from_pretrained(model, str(a.path), adapter_name=name)
                    else:
                        model.load_adapter(str(a.path), adapter_name=name)
                    names[a.fingerprint] = name
            model.to(device).eval()
        return cls(name="hf", version=f"transformers=={metadata.version('transformers')}",
                   options={"batch_size": batch_size, "dtype": str(model.dtype), "device": device},
                   model=model, tokenizer=tokenizer, adapter_names=names,
                   batch_size=batch_size, device=device, log=log)

    def generate(self, requests: Sequence[GenRequest]) -> Iterator[tuple[int, list[Completion]]]:
        # Requests sharing settings and adapter batch together; longest first, so padding is
        # small and a batch that would run out of memory does so at once.
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            key = (r.max_tokens, r.stop, r.temperature, r.top_p, r.n, r.seed,
                   r.adapter.fingerprint if r.adapter else None)
            groups[key].append(i)
        for indices in groups.values():
            indices.sort(key=lambda i: -len(requests[i].prompt))
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                yield from zip(batch, self._generate_batch([requests[i] for i in batch]),
                               strict=True)

    def _generate_batch(self, batch: list[GenRequest]) -> list[list[Completion]]:
        import contextlib

        import torch

        first = batch[0]
        enc = self.tokenizer([r.prompt for r in batch], return_tensors="pt", padding=True)
        enc = enc.to(self.device)
        sampling = first.temperature > 0
        # Greedy samples are identical: generate one and repeat it (transformers, like vLLM,
        # refuses num_return_sequences > 1 without sampling).
        per_prompt = first.n if sampling else 1
        kwargs = dict(max_new_tokens=first.max_tokens, do_sample=sampling,
                      num_return_sequences=per_prompt, pad_token_id=self.tokenizer.pad_token_id)
        if sampling:
            kwargs.update(temperature=first.temperature, top_p=first.top_p)
            if first.seed is not None:
                torch.manual_seed(first.seed)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if first.stop:
            kwargs.update(stop_strings=list(first.stop), tokenizer=self.tokenizer)
        with torch.inference_mode(), self._adapter(first.adapter) or contextlib.nullcontext():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        eos = self.tokenizer.eos_token_id
        results = []
        for b, r in enumerate(batch):
            n_prompt = int(enc["attention_mask"][b].sum())
            completions = []
            for row in new[b * per_prompt:(b + 1) * per_prompt]:
                ids = row.tolist()
                hit_eos = eos in ids
                ids = ids[:ids.index(eos)] if hit_eos else [t for t in ids
                                                            if t != self.tokenizer.pad_token_id]
                text, hit_stop = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True),
                                             r.stop)
                completions.append(Completion(
                    text=text, finish_reason="stop" if (hit_eos or hit_stop) else "length",
                    n_prompt_tokens=n_prompt, n_completion_tokens=len(ids)))
            results.append(completions * (r.n // per_prompt))
        return results

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]
                      ) -> Iterator[tuple[int, Loglikelihood]]:
        return score_requests(requests, self.tokenizer, self._score_windows)

    def _score_windows(self, windows: list[tuple[list[int], list[int], Any]]
                       ) -> Iterator[tuple[int, float, bool]]:
        """One forward pass per batch of distinct inputs. Windows with the same input share it
        (MMLU's four one-token answers after one prompt: one pass, as lm-eval's HF model)."""
        inputs: dict[tuple, list[int]] = defaultdict(list)
        for j, (context, continuation, adapter) in enumerate(windows):
            key = (adapter.fingerprint if adapter else None, tuple(context + continuation[:-1]))
            inputs[key].append(j)
        by_adapter: dict[Any, list[tuple]] = defaultdict(list)
        for key in inputs:
            by_adapter[key[0]].append(key)
        adapters = {(a.fingerprint if a else None): a for _, _, a in windows}
        scored = {k: max(len(windows[j][1]) for j in js) for k, js in inputs.items()}
        for fingerprint, keys in by_adapter.items():
            keys.sort(key=lambda k: -len(k[1]))  # longest first: little padding, early OOM
            batch: list[tuple] = []
            for key in keys:
                kept = max(scored[k] for k in [*batch, key])
                # Bound the logits a pass keeps (batch x scored positions x vocabulary).
                if batch and (len(batch) >= self.batch_size
                              or (len(batch) + 1) * kept > _LL_POSITIONS):
                    yield from self._score_batch(batch, inputs, windows, adapters[fingerprint])
                    batch = []
                batch.append(key)
            if batch:
                yield from self._score_batch(batch, inputs, windows, adapters[fingerprint])

    def _score_batch(self, keys: list[tuple], inputs: dict, windows: list, adapter: Any
                     ) -> Iterator[tuple[int, float, bool]]:
        import contextlib

        import torch

        rows = [list(k[1]) for k in keys]
        width = max(len(r) for r in rows)
        kept = max(len(windows[j][1]) for k in keys for j in inputs[k])
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        # Left padding, so every row's scored positions are its last ones; positions count from
        # each row's first real token, so padding cannot change a row's numbers.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode(), self._adapter(adapter) or contextlib.nullcontext():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=positions.to(self.device),
                                logits_to_keep=kept).logits
            for b, key in enumerate(keys):
                for j in inputs[key]:
                    target = torch.tensor(windows[j][1], device=logits.device)
                    rows_logits = logits[b, kept - len(target):]
                    total, greedy = 0.0, True
                    for start in range(0, len(target), 1024):  # bounded log_softmax memory
                        chunk = rows_logits[start:start + 1024].float()
                        want = target[start:start + 1024]
                        logprobs = chunk.log_softmax(-1)
                        total += float(logprobs.gather(1, want[:, None]).sum())
                        greedy = greedy and bool((chunk.argmax(-1) == want).all())
                    yield j, total, greedy

    def _adapter(self, adapter: Checkpoint | None):
        """Select the adapter for this batch, or disable adapters for base requests."""
        if not self.adapter_names:
            return None
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(self.adapter_names[adapter.fingerprint])
        return None

    def close(self) -> None:
        self.model = None
        if self.log is not None:  # the terminal back, before any error is printed
            self.log.close()
            self.log = None
        import gc

        gc.collect()
