"""From text to token tensors: prompt formatting, encoding, padding, pair batches.

Prompt and response are tokenized separately (so no BPE merge crosses their boundary)
and the response ends with EOS. The loss mask covers the response tokens and EOS, never the prompt
or padding.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from orchestrator.data.schema import PairDataset
from orchestrator.errors import MoaError


def prompt_text(tokenizer, prompt: str) -> str:
    """The prompt as the model sees it: through its chat template when it has one, else after
    the BOS token (texts are tokenized without special tokens, so BOS must be written here)."""
    return chat_text(tokenizer, [{"role": "user", "content": prompt}])


def chat_text(tokenizer, messages: Sequence[dict[str, str]]) -> str:
    """A conversation as the model sees it, ending where the assistant's answer starts. A model
    without a chat template was trained on single user turns, so it takes only those."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
    if len(messages) != 1 or messages[0]["role"] != "user":
        raise MoaError("this model has no chat template, so messages must be a single user message")
    return (getattr(tokenizer, "bos_token", None) or "") + messages[0]["content"] + "\n"


def encode_prompt(tokenizer, prompt: str, max_tokens: int) -> list[int]:
    ids = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    return ids[-max_tokens:]  # keep the end: the question and the assistant marker


def encode_response(tokenizer, response: str, max_tokens: int) -> list[int]:
    ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids[:max_tokens]


def pad_batch(
    sequences: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad (prompt_ids, response_ids) rows into input_ids, attention_mask and loss_mask."""
    width = max(len(p) + len(r) for p, r in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    loss_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (prompt, response) in enumerate(sequences):
        n, total = len(prompt), len(prompt) + len(response)
        input_ids[row, :total] = torch.tensor(prompt + response)
        attention_mask[row, :total] = 1
        loss_mask[row, n:total] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


@dataclass(frozen=True)
class EncodedPair:
    prompt: list[int]
    response_a: list[int]
    response_b: list[int]
    signs: list[int]  # per objective: +1 prefers a, −1 prefers b, 0 tie


def encode_pairs(
    tokenizer, dataset: PairDataset, max_prompt_tokens: int, max_response_tokens: int
) -> list[EncodedPair]:
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise MoaError("the tokenizer needs an EOS and a pad token (set tokenizer.pad_token)")
    return [
        EncodedPair(
            encode_prompt(tokenizer, pair.prompt, max_prompt_tokens),
            encode_response(tokenizer, pair.response_a, max_response_tokens),
            encode_response(tokenizer, pair.response_b, max_response_tokens),
            pair.signs(dataset.objectives),
        )
        for pair in dataset
    ]


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch of 2B rows: the B responses a, then the B responses b (one forward for both)."""
    rows = [(p.prompt, p.response_a) for p in pairs] + [(p.prompt, p.response_b) for p in pairs]
    batch = pad_batch(rows, pad_id)
    batch["signs"] = torch.tensor([p.signs for p in pairs], dtype=torch.float32)
    return batch
