"""Batched generation with a KV cache and a preference vector per row.

One forward pass serves many different λ: each row of the batch carries its own λ into every
SVD-LoRA layer. Prompts are left-padded; position ids skip the padding, so a row generates the same
tokens in a batch as alone. Greedy when temperature is 0, else temperature / top-p sampling with a
generator per row, so a seeded request gives the same text whatever batch it lands in.
"""

import inspect
from collections.abc import Collection, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn
from tqdm import tqdm

from orchestrator.data.encoding import encode_prompt
from orchestrator.errors import MoaError
from orchestrator.model.svd_lora import preference, svd_lora_config
from orchestrator.objectives.preference import PreferenceLike, validate_preference


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise MoaError(f"max_new_tokens must be ≥ 1; got {self.max_new_tokens}")
        if self.temperature < 0:
            raise MoaError(f"temperature must be ≥ 0; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise MoaError(f"top_p must be in (0, 1]; got {self.top_p}")


@dataclass(frozen=True)
class Piece:
    """One row's output of one decoding step."""

    token: int | None  # the new token; None when it is the stop token
    finish: str | None = None  # on the row's last piece: "stop" (stop token) or "length"


@torch.inference_mode()
def decode_steps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    params: Sequence[SamplingParams],
    stop_token_ids: Collection[int],
    pad_token_id: int,
) -> Iterator[list[Piece | None]]:
    """Decode left-padded rows one step at a time; one SamplingParams per row.

    Each step yields one entry per row: its Piece, or None once the row has finished. Rows end at
    a stop token or at their max_new_tokens; the model runs while any row is still going.
    """
    rows = input_ids.shape[0]
    device = input_ids.device
    generators = [
        torch.Generator(device=device).manual_seed(p.seed) if p.temperature > 0 else None
        for p in params
    ]
    limits = torch.tensor([p.max_new_tokens for p in params], device=device)
    stops = torch.tensor(sorted(stop_token_ids), device=device)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        **_last_logits_only(model),
    )
    cache, logits = out.cache, out.logits[:, -1]
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    for t in range(int(limits.max())):
        token = _next_tokens(logits, params, generators)
        stopped = torch.isin(token, stops) & ~done
        finished = (stopped | (t + 1 >= limits)) & ~done
        yield [
            None
            if was_done
            else Piece(None if stop else tok, ("stop" if stop else "length") if fin else None)
            for tok, was_done, stop, fin in zip(
                token.tolist(), done.tolist(), stopped.tolist(), finished.tolist(), strict=True
            )
        ]
        done |= finished
        if bool(done.all()):
            return
        token = torch.where(done, torch.full_like(token, pad_token_id), token)
        attention_mask = torch.cat([attention_mask, (~done).long().unsqueeze(-1)], dim=-1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=token.unsqueeze(-1),
            attention_mask=attention_mask,
            position_ids=positions,
            cache=cache,
        )
        cache, logits = out.cache, out.logits[:, -1]


def generate_tokens(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    params: Sequence[SamplingParams],
    stop_token_ids: Collection[int],
    pad_token_id: int,
) -> list[list[int]]:
    """New tokens of each left-padded row (without the stop token); one SamplingParams per row."""
    result: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    for step in decode_steps(
        model, input_ids, attention_mask, params, stop_token_ids, pad_token_id
    ):
        for row, piece in enumerate(step):
            if piece is not None and piece.token is not None:
                result[row].append(piece.token)
    return result


def _last_logits_only(model: nn.Module) -> dict:
    """Ask for the last position's logits only, where the model supports it: a prefill of
    [B, T, vocab] logits is large for a 150k vocabulary."""
    accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if accepts else {}


def stop_token_ids(model: nn.Module, tokenizer) -> set[int]:
    """The tokenizer's EOS plus the model's generation-config EOS ids (Llama 3 has several)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids |= set(configured) if isinstance(configured, list | tuple) else {configured}
    return {i for i in ids if i is not None}


def _next_tokens(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators
) -> torch.Tensor:
    greedy = logits.argmax(-1)
    if all(g is None for g in generators):
        return greedy
    tokens = greedy.clone()
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if generator is None:
            continue
        probs = torch.softmax(logits[row].float() / p.temperature, dim=-1)
        if p.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < p.top_p  # always keeps the top token
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        tokens[row] = torch.multinomial(probs, 1, generator=generator)[0]
    return tokens


def generate(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    preferences: PreferenceLike | None,
    params: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
    **options,
) -> list[str]:
    """Answers to `prompts` at their preferences, as text; see `generate_ids` for the arguments
    (options: batch_size, max_prompt_tokens, progress)."""
    ids = generate_ids(model, tokenizer, prompts, preferences, params, **options)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def generate_ids(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    preferences: PreferenceLike | None,
    params: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
    *,
    batch_size: int = 64,
    max_prompt_tokens: int = 256,
    progress: bool = False,
) -> list[list[int]]:
    """The new token ids of the answer to each prompt (stop token excluded).

    `preferences`: one λ [m] for every prompt, one per prompt [N, m], or None for a model without
    adapter (or with it switched off). A single SamplingParams serves every prompt, row i with
    seed `seed + i`, so repeated prompts give different samples.
    """
    if isinstance(params, SamplingParams):
        params = [replace(params, seed=params.seed + i) for i in range(len(prompts))]
    if len(params) != len(prompts):
        raise MoaError(f"got {len(params)} sampling params for {len(prompts)} prompts")
    lam = None
    if preferences is not None:
        lam = validate_preference(preferences, svd_lora_config(model).num_objectives)
        if lam.dim() == 1:
            lam = lam.expand(len(prompts), -1)
        if lam.shape[0] != len(prompts):
            raise MoaError(
                f"preferences must have shape [m] or [{len(prompts)}, m]; got {list(lam.shape)}"
            )
    device = next(model.parameters()).device
    stops = stop_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    answers: list[list[int]] = []
    try:
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
            chunk = slice(start, start + batch_size)
            input_ids, attention_mask = _left_padded(
                tokenizer, prompts[chunk], max_prompt_tokens, device
            )
            steering = nullcontext() if lam is None else preference(model, lam[chunk])
            with steering:
                answers += generate_tokens(
                    model,
                    input_ids,
                    attention_mask,
                    params[chunk],
                    stops,
                    tokenizer.pad_token_id,
                )
    finally:
        model.train(was_training)
    return answers


def _left_padded(tokenizer, prompts: Sequence[str], max_tokens: int, device) -> tuple:
    encoded = [encode_prompt(tokenizer, p, max_tokens) for p in prompts]
    return left_pad(encoded, tokenizer.pad_token_id, device)


def left_pad(encoded: Sequence[Sequence[int]], pad_token_id: int, device) -> tuple:
    """(input_ids, attention_mask) of token rows padded on the left to one width."""
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)
