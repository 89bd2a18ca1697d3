"""Hugging Face reward models as judges: one sequence-classification model per objective, whose
single logit is the reward of a (prompt, response).

The conversation is rendered with the reward model's chat template when its tokenizer has one
(as the reward models on the hub expect), else as "prompt\\n\\nresponse". They run on the driver.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from orchestrator.errors import MoaError
from orchestrator.model.loading import resolve_device


class RewardModels:
    def __init__(
        self,
        paths: Mapping[str, str],
        objectives: Sequence[str],
        *,
        device: str = "auto",
        batch_size: int = 16,
        max_tokens: int = 1024,
    ):
        missing = [name for name in objectives if name not in paths]
        if missing:
            raise MoaError(f"reward_models has no model for objective(s) {missing}")
        self.device = resolve_device(device)
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.judges = [self._load(name, paths[name]) for name in objectives]

    def _load(self, objective: str, path: str):
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise MoaError(f"reward_models.{objective}: could not load {path!r}: {err}") from err
        if model.config.num_labels != 1:
            raise MoaError(
                f"reward_models.{objective}: {path!r} has {model.config.num_labels} labels; a "
                "reward model has one output"
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id  # to find each row's last token
        tokenizer.padding_side = "right"
        return tokenizer, model.to(self.device).eval()

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """[N, m]: each objective's reward model's score of each (prompt, response)."""
        columns = []
        for tokenizer, model in self.judges:
            texts = [render(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
            scores = []
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    add_special_tokens=not tokenizer.chat_template,
                ).to(self.device)
                scores.append(model(**batch).logits[:, 0].float().cpu())
            columns.append(torch.cat(scores) if scores else torch.zeros(0))
        return torch.stack(columns, dim=-1).numpy().astype(np.float64)


def render(tokenizer, prompt: str, response: str) -> str:
    if tokenizer.chat_template:
        conversation = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
        ]
        return tokenizer.apply_chat_template(conversation, tokenize=False)
    return f"{prompt}\n\n{response}"
