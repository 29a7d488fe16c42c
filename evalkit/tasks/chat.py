"""Render chat messages with a model's own chat template (transformers' implementation)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError


@dataclass
class ChatTemplate:
    tokenizer: Any
    hash: str

    @classmethod
    def load(cls, model_path: Path) -> ChatTemplate:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if not tokenizer.chat_template:
            raise EvalkitError(f"{model_path} has no chat template; use the task's non-chat "
                               "variant (e.g. gsm8k instead of gsm8k_chat)")
        digest = hashlib.sha256(tokenizer.chat_template.encode()).hexdigest()
        return cls(tokenizer, digest)

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
