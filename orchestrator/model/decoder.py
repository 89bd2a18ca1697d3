"""Continuous batching: rows join and leave the running batch at every decoding step.

`ContinuousDecoder` holds up to `max_num_seqs` rows in the slots of one preallocated KV cache
(per layer, keys and values [slots, kv heads, columns, head dim]). Every running row writes its
next key at one shared column; a row's span runs from where its prompt was written to that
column, and a 4D attention mask keeps each row inside its own span. A step admits waiting
requests into free slots (their prompts prefilled together, their keys copied into their slots,
right-aligned at the shared column), draws the next token of every running row, each with its
own sampling parameters, then runs one forward pass for all of them, each row at its own λ. Rows
that finish leave at once and their slots take newcomers at the next step. Per step, only the
new column is written; when the columns run out, the live spans are moved left once, which
leaves at least half of the columns free (so a move is needed at most every max_prompt_tokens +
max_new_tokens steps).

A row's tokens do not depend on its batchmates: its positions count its own tokens, the mask
hides every other row, and its random draws are a function of its own seed and step
(model/sampling.py), so a row gives the tokens it would give alone.
"""

from collections import deque
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from orchestrator.errors import MoaError
from orchestrator.model.forward import (
    accepts_logits_to_keep,
    as_model_mask,
    check_masked_attention,
)
from orchestrator.model.sampling import Piece, SamplingParams, next_tokens
from orchestrator.model.svd_lora import svd_lora_config, svd_lora_layers
from orchestrator.objectives.preference import validate_preference


@dataclass
class _Row:
    key: Hashable
    params: SamplingParams
    preference: tuple[float, ...] | None
    start: int = 0  # the first column of its span
    position: int = 0  # the position id of its next token
    drawn: int = 0  # tokens drawn so far


@dataclass(frozen=True)
class _Request:
    key: Hashable
    prompt_ids: Sequence[int]
    preference: tuple[float, ...] | None
    params: SamplingParams
    answer_ids: Sequence[int] = ()  # tokens it drew elsewhere: it goes on from them


class _SlotCache:
    """The model's KV cache during decoding steps: `update` writes the step's keys and values at
    `column` in the first `active` slots and returns their columns from `low` (where the oldest
    running row starts) to it, as views."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]]):
        self.layers = layers
        self.low, self.column, self.active = 0, 0, 0

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = self.layers[layer_idx]
        window, n = slice(self.low, self.column + 1), self.active
        keys[:n, :, self.column] = key_states[:, :, -1]
        values[:n, :, self.column] = value_states[:, :, -1]
        return keys[:n, :, window], values[:n, :, window]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.column


class ContinuousDecoder:
    """Iteration-level scheduling of generation requests over one model.

    `add` queues a request (prompt token ids, λ or None, SamplingParams) under a key; each
    `step()` returns [(key, Piece)] for every row that drew a token in it, a row's last piece
    saying how it finished. A request added with the `answer_ids` it drew so far (in another
    decoder) goes on as if it had never left: its next draws are those it would have made.
    `cancel` drops a request, queued or running. Prompts longer than `max_prompt_tokens`, token
    ids outside the vocabulary and answers longer than `max_new_tokens` are refused when added. With
    `refill` false, requests are admitted only into an empty batch, which then runs until its
    longest answer ends: static batching, for comparison.
    """

    def __init__(
        self,
        model: nn.Module,
        pad_token_id: int,
        stop_token_ids: Collection[int],
        *,
        max_num_seqs: int = 32,
        max_prompt_tokens: int = 256,
        max_new_tokens: int = 512,
        refill: bool = True,
    ):
        check_masked_attention(model, "the decoder")
        self.model, self.pad = model, pad_token_id
        self.vocab = model.get_input_embeddings().num_embeddings
        self.device = next(model.parameters()).device
        self.stops = torch.tensor(sorted(stop_token_ids), dtype=torch.long, device=self.device)
        self.max_num_seqs, self.refill = max_num_seqs, refill
        self.max_prompt_tokens, self.max_new_tokens = max_prompt_tokens, max_new_tokens
        self.columns = 2 * (max_prompt_tokens + max_new_tokens)
        # A prefill's [B, T, vocab] logits are large for a 150k vocabulary: the last only.
        self.last_logits_only = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        self.lora_layers = [layer for _, layer in svd_lora_layers(model)]
        self.num_objectives = svd_lora_config(model).num_objectives if self.lora_layers else 0
        self.with_preference: bool | None = None  # fixed by the first request
        self.steered_at: tuple | None = None  # the λ rows the adapter layers hold
        self.waiting: deque[_Request] = deque()
        self.slots: list[_Row | None] = [None] * max_num_seqs
        self.cache: _SlotCache | None = None  # allocated at the first prefill, from its shapes
        self.mask = torch.zeros(max_num_seqs, self.columns, dtype=torch.bool, device=self.device)
        self.logits: torch.Tensor | None = None  # [slots, V]: each running row's next-token logits
        self.column = max_prompt_tokens  # where the next decoding step writes

    def add(
        self,
        key: Hashable,
        prompt_ids: Sequence[int],
        preference: Sequence[float] | None,
        params: SamplingParams,
        answer_ids: Sequence[int] = (),
    ) -> None:
        if not 0 < len(prompt_ids) <= self.max_prompt_tokens:
            raise MoaError(
                f"a prompt must have 1 to {self.max_prompt_tokens} tokens; got {len(prompt_ids)}"
            )
        outside = [i for i in [*prompt_ids, *answer_ids] if not 0 <= i < self.vocab]
        if outside:
            raise MoaError(f"token ids must be in [0, {self.vocab}); got {outside[0]}")
        if len(answer_ids) >= params.max_new_tokens:
            raise MoaError(
                f"an answer to go on from has {len(answer_ids)} tokens; max_new_tokens is "
                f"{params.max_new_tokens}"
            )
        if self.with_preference is None:
            self.with_preference = preference is not None
        if self.with_preference != (preference is not None):
            raise MoaError("every request to a decoder needs a preference, or none does")
        if preference is not None:
            if not self.lora_layers:
                raise MoaError("a preference needs a model with an SVD-LoRA adapter")
            preference = validate_preference(preference, self.num_objectives).tolist()
        if params.max_new_tokens > self.max_new_tokens:
            raise MoaError(
                f"max_new_tokens {params.max_new_tokens} is above this decoder's "
                f"{self.max_new_tokens}"
            )
        lam = None if preference is None else tuple(preference)
        self.waiting.append(_Request(key, list(prompt_ids), lam, params, list(answer_ids)))

    def cancel(self, key: Hashable) -> None:
        self.waiting = deque(r for r in self.waiting if r.key != key)
        for slot, row in enumerate(self.slots):
            if row is not None and row.key == key:
                self._leave(slot)

    def alone(self) -> "ContinuousDecoder":
        """An empty decoder like this one with a single slot: for a row to step by itself."""
        return ContinuousDecoder(
            self.model,
            self.pad,
            self.stops.tolist(),
            max_num_seqs=1,
            max_prompt_tokens=self.max_prompt_tokens,
            max_new_tokens=self.max_new_tokens,
        )

    def take_waiting(self) -> list[tuple]:
        """The requests not admitted yet, as `add`'s arguments, removed."""
        taken = [(r.key, r.prompt_ids, r.preference, r.params, r.answer_ids) for r in self.waiting]
        self.waiting.clear()
        return taken

    @property
    def running(self) -> int:
        return sum(row is not None for row in self.slots)

    def has_work(self) -> bool:
        return bool(self.waiting) or self.running > 0

    @torch.inference_mode()
    def step(self) -> list[tuple[Hashable, Piece]]:
        self._admit()
        live = [slot for slot, row in enumerate(self.slots) if row is not None]
        if not live:
            return []
        rows = [self.slots[slot] for slot in live]
        index = torch.tensor(live, device=self.device)
        tokens = next_tokens(self.logits[index], [r.params for r in rows], [r.drawn for r in rows])
        stopped = torch.isin(tokens, self.stops).tolist()
        pieces = []
        for slot, row, token, stop in zip(live, rows, tokens.tolist(), stopped, strict=True):
            row.drawn += 1
            finish = (
                "stop" if stop else "length" if row.drawn >= row.params.max_new_tokens else None
            )
            pieces.append((row.key, Piece(None if stop else token, finish)))
            if finish is not None:
                self._leave(slot)
        self._decode(dict(zip(live, tokens.tolist(), strict=True)))
        return pieces

    def _leave(self, slot: int) -> None:
        self.slots[slot] = None
        self.mask[slot] = False

    def _admit(self) -> None:
        if self.running == 0:
            self.column = self.max_prompt_tokens  # nothing to keep: start from the left again
        elif not self.refill:
            return
        free = [slot for slot, row in enumerate(self.slots) if row is None]
        newcomers = [self.waiting.popleft() for _ in range(min(len(free), len(self.waiting)))]
        if not newcomers:
            return
        slots = free[: len(newcomers)]
        texts = [[*r.prompt_ids, *r.answer_ids] for r in newcomers]
        width = max(len(ids) for ids in texts)
        # An answer gone on from can be wider than the prompts: the shared column moves right,
        # over columns no running row attends to.
        self.column = max(self.column, width)
        input_ids = torch.full((len(newcomers), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(newcomers), width), dtype=torch.long)
        for i, ids in enumerate(texts):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention[i, width - len(ids) :] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        self._steer([r.preference for r in newcomers])
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            **self.last_logits_only,
        )
        self._allocate(out.cache, out.logits.shape[-1], out.logits.dtype)
        index = torch.tensor(slots, device=self.device)
        span = slice(self.column - width, self.column)
        for (keys, values), layer in zip(self.cache.layers, out.cache.layers, strict=True):
            keys[index, :, span] = layer.keys
            values[index, :, span] = layer.values
        self.mask[index] = False
        self.mask[index, span] = attention.bool()
        self.logits[index] = out.logits[:, -1]
        for slot, request, ids in zip(slots, newcomers, texts, strict=True):
            self.slots[slot] = _Row(
                request.key,
                request.params,
                request.preference,
                start=self.column - len(ids),
                position=len(ids),
                drawn=len(request.answer_ids),
            )

    def _allocate(self, prefill_cache, vocab: int, dtype: torch.dtype) -> None:
        if self.cache is not None:
            return
        layers = []
        for layer in prefill_cache.layers:
            _, heads, _, dim = layer.keys.shape
            shape = (self.max_num_seqs, heads, self.columns, dim)
            layers.append(
                (
                    torch.zeros(shape, dtype=layer.keys.dtype, device=self.device),
                    torch.zeros(shape, dtype=layer.values.dtype, device=self.device),
                )
            )
        self.cache = _SlotCache(layers)
        self.logits = torch.zeros(self.max_num_seqs, vocab, dtype=dtype, device=self.device)

    def _decode(self, drawn: dict[int, int]) -> None:
        """One forward pass for the rows still running after the tokens `drawn` (slot → token)."""
        live = [slot for slot, row in enumerate(self.slots) if row is not None]
        if not live:
            return
        if self.column == self.columns:
            self._move_left()
        active = live[-1] + 1  # slots above the highest running one are left out of the pass
        tokens = torch.full((active, 1), self.pad, dtype=torch.long)
        positions = torch.zeros((active, 1), dtype=torch.long)
        for slot in live:
            tokens[slot, 0] = drawn[slot]
            positions[slot, 0] = self.slots[slot].position
            self.slots[slot].position += 1
        self.mask[:active, self.column] = True  # a free slot attends to its own pad: no NaN
        low = min(self.slots[slot].start for slot in live)
        self.cache.low, self.cache.column, self.cache.active = low, self.column, active
        allowed = self.mask[:active, None, None, low : self.column + 1]
        mask = as_model_mask(self.model, allowed, self.cache.layers[0][0].dtype)
        idle = self.slots[live[0]].preference  # a free slot's λ: any valid one
        lam = [self.slots[s].preference if self.slots[s] else idle for s in range(active)]
        self._steer(lam)
        out = self.model(
            input_ids=tokens.to(self.device),
            attention_mask=mask,
            position_ids=positions.to(self.device),
            cache=self.cache,
            use_cache=True,
        )
        free = [slot for slot in range(active) if self.slots[slot] is None]
        self.mask[free, self.column] = False
        self.logits[:active] = out.logits[:, -1]
        self.column += 1

    def _move_left(self) -> None:
        """Move every span left so that at least half the columns are free again."""
        starts = [row.start for row in self.slots if row is not None]
        target = max(self.column - min(starts), self.max_prompt_tokens)
        shift = self.column - target
        for keys, values in self.cache.layers:
            keys[:, :, :target] = keys[:, :, shift : self.column].clone()
            values[:, :, :target] = values[:, :, shift : self.column].clone()
        self.mask[:, :target] = self.mask[:, shift : self.column].clone()
        self.mask[:, target:] = False
        for row in self.slots:
            if row is not None:
                row.start -= shift
        self.column = target

    def _steer(self, lam: list[tuple[float, ...] | None]) -> None:
        """Each row at its λ (written into the SVD-LoRA layers only when it changed); none when
        no row has one (a model without an adapter, or with it switched off)."""
        key = tuple(lam)
        if key == self.steered_at or all(x is None for x in lam):
            return
        tensor = torch.tensor(lam, dtype=torch.float32, device=self.device)
        for layer in self.lora_layers:
            layer.preference = tensor
        self.steered_at = key
