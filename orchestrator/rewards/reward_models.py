"""Hugging Face sequence classifiers as reward (or cost) models: each (prompt, response) row gets
the classifier's outputs, read at its last token.

A row is encoded as training encodes it (data/encoding.py): the prompt through the model's chat
template when its tokenizer has one, then the response and EOS; so a reward model trained by
`moa reward` scores exactly what it was trained on, and a hub reward model sees its own template.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from orchestrator.config.sections import RewardModelScorer
from orchestrator.data.encoding import encode_prompt, encode_response, pad_batch
from orchestrator.errors import MoaError
from orchestrator.model.reward_model import LAYOUT


def classifier_head(spec: RewardModelScorer, field: str) -> tuple[str, int]:
    """(the classifier's folder or hub id, the index of its output that `spec` names), checked
    from the model's config alone. A `moa reward` folder of one model per objective resolves to
    the subfolder its head names. Errors name `field` (e.g. eval.scorers.harmless)."""
    path, head = spec.model, spec.head
    layout_file = Path(path) / LAYOUT
    layout = json.loads(layout_file.read_text()) if layout_file.is_file() else {}
    if layout.get("per_objective"):
        objectives = layout["objectives"]
        if head not in objectives:
            raise MoaError(
                f"{field}.head: {path} holds one reward model per objective {objectives}; "
                f"name one of them (got {head!r})"
            )
        path, head = str(Path(path) / head), None
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise MoaError(f"{field}.model: could not load {path!r}: {err}") from None
    num_labels = config.num_labels
    labels = [config.id2label[i] for i in range(num_labels)]
    if head is None:
        if num_labels != 1:
            raise MoaError(
                f"{field}.head: {path} has {num_labels} outputs {labels}; name one (index or label)"
            )
        return path, 0
    if isinstance(head, str):
        if head not in labels:
            raise MoaError(f"{field}.head: {path} has no output {head!r}; its outputs: {labels}")
        return path, labels.index(head)
    if not 0 <= head < num_labels:
        raise MoaError(f"{field}.head: {head} is out of range; {path} has {num_labels} outputs")
    return path, head


class Classifier:
    """A sequence classifier and its tokenizer, scoring rows in batches."""

    def __init__(
        self,
        path: str,
        device: str = "cpu",
        batch_size: int = 32,
        max_prompt_tokens: int = 256,
        max_response_tokens: int = 512,
    ):
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise MoaError(f"could not load the reward model {path!r}: {err}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # finds each row's end
        self.model.to(device).eval()
        self.device, self.batch_size = device, batch_size
        self.max_prompt_tokens, self.max_response_tokens = max_prompt_tokens, max_response_tokens

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """[N, outputs] of the rows (prompt, response)."""
        rows = [
            (
                encode_prompt(self.tokenizer, prompt, self.max_prompt_tokens),
                encode_response(self.tokenizer, response, self.max_response_tokens),
            )
            for prompt, response in zip(prompts, responses, strict=True)
        ]
        outputs = [np.zeros((0, self.model.config.num_labels))]
        for start in range(0, len(rows), self.batch_size):
            batch = pad_batch(rows[start : start + self.batch_size], self.tokenizer.pad_token_id)
            logits = self.model(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
            ).logits
            outputs.append(logits.float().cpu().numpy())
        return np.concatenate(outputs).astype(np.float64)
