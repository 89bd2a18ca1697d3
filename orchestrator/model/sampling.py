"""What a row asks of decoding (SamplingParams), what it gets per step (Piece), and the next
token of every row of a batch at once.

Greedy rows take the likeliest token. A sampled row draws from its top-p nucleus of
softmax(logits / temperature) by the Gumbel-max trick, with noise that is a hash of (its seed,
its step, the token id): a seeded row draws the same tokens whatever batch, slot or machine it
lands on, and the whole batch is sampled in a few tensor operations, with no loop over rows.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from orchestrator.errors import MoaError

MAX_SEED = 2**64 - 1  # seeds are reduced to 64 bits; larger ones are refused, not wrapped
MIN_TEMPERATURE = 1e-3  # below it logits / temperature overflow; use 0 for greedy
NUCLEUS_CANDIDATES = 1024  # the top-p nucleus is looked for among this many likeliest tokens first
_M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise MoaError(f"max_new_tokens must be ≥ 1; got {self.max_new_tokens}")
        if not (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= 100):
            raise MoaError(
                f"temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, 100]; "
                f"got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise MoaError(f"top_p must be in (0, 1]; got {self.top_p}")
        if not 0 <= self.seed <= MAX_SEED:
            raise MoaError(f"seed must be in [0, 2^64 - 1]; got {self.seed}")


@dataclass(frozen=True)
class Piece:
    """One row's output of one decoding step."""

    token: int | None  # the new token; None when it is the stop token
    finish: str | None = None  # on the row's last piece: "stop" (stop token) or "length"


def stop_token_ids(model: nn.Module, tokenizer) -> set[int]:
    """The tokenizer's EOS plus the model's generation-config EOS ids (Llama 3 has several)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids |= set(configured) if isinstance(configured, list | tuple) else {configured}
    return {i for i in ids if i is not None}


def next_tokens(
    logits: torch.Tensor, params: Sequence[SamplingParams], steps: Sequence[int]
) -> torch.Tensor:
    """The next token [B] of each row of `logits` [B, V], row i by params[i] at its step
    steps[i] (the number of tokens it has drawn before)."""
    tokens = logits.argmax(-1)
    sampled = [i for i, p in enumerate(params) if p.temperature > 0]
    if not sampled:
        return tokens
    device = logits.device
    rows = torch.tensor(sampled, device=device)
    temperature = torch.tensor([params[i].temperature for i in sampled], device=device)
    top_p = torch.tensor([params[i].top_p for i in sampled], device=device, dtype=torch.float64)
    log_probs = torch.log_softmax(logits[rows].double() / temperature[:, None].double(), dim=-1)
    values, ids = _nucleus_candidates(log_probs, top_p)
    mass_before = values.exp().cumsum(-1) - values.exp()
    keep = mass_before < top_p[:, None]  # the likeliest token is always kept
    seeds = [params[i].seed for i in sampled]
    noise = _gumbel(seeds, [steps[i] for i in sampled], ids)
    scores = torch.where(keep, values + noise, torch.full_like(values, -torch.inf))
    tokens[rows] = ids.gather(-1, scores.argmax(-1, keepdim=True)).squeeze(-1)
    return tokens


def _nucleus_candidates(log_probs: torch.Tensor, top_p: torch.Tensor) -> tuple:
    """(log-probs, token ids) [b, k] in descending order, k enough to hold every row's top-p
    nucleus: the likeliest NUCLEUS_CANDIDATES tokens when they do, else the whole vocabulary."""
    k = min(NUCLEUS_CANDIDATES, log_probs.shape[-1])
    values, ids = log_probs.topk(k, dim=-1)
    if k < log_probs.shape[-1] and bool((values.exp().sum(-1) < top_p).any()):
        values, ids = log_probs.sort(dim=-1, descending=True)
    return values, ids


def _gumbel(seeds: Sequence[int], steps: Sequence[int], ids: torch.Tensor) -> torch.Tensor:
    """Gumbel noise [b, k] for the token ids `ids` of each row, a pure function of (seed, step,
    token id)."""
    device = ids.device
    low = torch.tensor([s & _M32 for s in seeds], device=device)[:, None]
    high = torch.tensor([(s >> 32) & _M32 for s in seeds], device=device)[:, None]
    step = torch.tensor(list(steps), device=device)[:, None]
    h = _mix(ids.long() ^ _mix(step ^ _mix(high ^ _mix(low))))
    uniform = (h.double() + 0.5) / 2**32  # in (0, 1)
    return -torch.log(-torch.log(uniform))


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply rounds) of int64 values, kept in [0, 2^32):
    every product stays below 2^63."""
    x = x & _M32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _M32
    x = ((x ^ (x >> 15)) * 0x5BD1E995) & _M32
    x = ((x ^ (x >> 13)) * 0x2C1B3C6D) & _M32
    return x ^ (x >> 16)
