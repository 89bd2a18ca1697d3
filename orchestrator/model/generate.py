"""Generation with a preference vector per row: `generate` answers prompts through the continuous
decoder (model/decoder.py), up to batch_size rows at a time, each row at its own λ; a row that
finishes makes room for the next prompt at once. A row generates the same tokens in any batch as
alone, and a seeded sampled row the same text whatever batch it lands in.

`decode_steps` is the static path the server still decodes with: left-padded rows, one batch,
run until its longest answer ends.
"""

from collections.abc import Collection, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import replace

import torch
from torch import nn
from tqdm import tqdm

from orchestrator.data.encoding import encode_prompt
from orchestrator.errors import MoaError
from orchestrator.model.decoder import ContinuousDecoder
from orchestrator.model.sampling import Piece, SamplingParams, next_tokens, stop_token_ids
from orchestrator.model.svd_lora import preference, svd_lora_config
from orchestrator.objectives.preference import PreferenceLike, validate_preference


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
    limits = torch.tensor([p.max_new_tokens for p in params], device=device)
    stops = torch.tensor(sorted(stop_token_ids), device=device)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
    )
    cache, logits = out.cache, out.logits[:, -1]
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    for t in range(int(limits.max())):
        token = next_tokens(logits, params, [t] * rows)
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
    decoder = ContinuousDecoder(
        model,
        tokenizer.pad_token_id,
        stop_token_ids(model, tokenizer),
        max_num_seqs=min(batch_size, len(prompts)) or 1,
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max((p.max_new_tokens for p in params), default=1),
    )
    for i, prompt in enumerate(prompts):
        row_lam = None if lam is None else lam[i].tolist()
        decoder.add(i, encode_prompt(tokenizer, prompt, max_prompt_tokens), row_lam, params[i])
    was_training = model.training
    model.eval()
    answers: list[list[int]] = [[] for _ in prompts]
    bar = tqdm(total=len(prompts), desc="generate", unit="answer", disable=not progress)
    restored = nullcontext() if lam is None else preference(model, lam[:1])  # the λ set before
    try:
        with restored:
            while decoder.has_work():
                for i, piece in decoder.step():
                    if piece.token is not None:
                        answers[i].append(piece.token)
                    bar.update(piece.finish is not None)
    finally:
        bar.close()
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
