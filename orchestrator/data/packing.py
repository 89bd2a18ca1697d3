"""Pair batches with no padding inside and no prompt computed twice.

Each pair is one sequence [prompt, a, b]: the positions of b restart after the prompt, and b
attends to the prompt and to itself, never to a, so both responses see exactly what they see in
a padded row of their own. Pairs sit side by side in rows of up to `row_tokens` tokens (a longer
pair gets a row to itself) under a block-diagonal causal mask; only the rows' ends are padded.

A packed batch is a dict of tensors, like a padded one (`collate_pairs`):
  input_ids, position_ids [R, T]; attention_mask [R, 1, T, T] (bool, True: may attend);
  sources [N]: for each response token, the flat index (row · T + position) of the position whose
  logits predict it; targets [N]: the token; owners [N]: its response, pair i's a at i, its b at
  B + i (the order of a padded batch's rows); token_pairs [R, T]: the pair each position belongs
  to (pair 0 on padding), for λ per pair; signs [B, m].
"""

from collections.abc import Sequence

import torch

from orchestrator.data.encoding import EncodedPair, collate_pairs

ROW_TOKENS = 1024


def packed_length(pair: EncodedPair) -> int:
    return len(pair.prompt) + len(pair.response_a) + len(pair.response_b)


def pack_pairs(
    pairs: Sequence[EncodedPair], pad_id: int, row_tokens: int = ROW_TOKENS
) -> dict[str, torch.Tensor]:
    rows: list[list[int]] = []  # pair indices per row, in order, each row filled first-fit
    room: list[int] = []
    for i, pair in enumerate(pairs):
        size = packed_length(pair)
        row = next((r for r, free in enumerate(room) if free >= size), None)
        if row is None:
            rows.append([])
            room.append(max(row_tokens, size))
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= size
    width = max(sum(packed_length(pairs[i]) for i in row) for row in rows)
    count = len(pairs)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    token_pairs = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), 1, width, width), dtype=torch.bool)
    sources, targets, owners = [], [], []
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            pair = pairs[i]
            p, a, b = len(pair.prompt), len(pair.response_a), len(pair.response_b)
            end = start + p + a + b
            input_ids[r, start:end] = torch.tensor(pair.prompt + pair.response_a + pair.response_b)
            position_ids[r, start:end] = torch.cat([torch.arange(p + a), torch.arange(p, p + b)])
            token_pairs[r, start:end] = i
            causal = torch.ones(p + a + b, p + a + b, dtype=torch.bool).tril()
            causal[p + a :, p : p + a] = False  # b does not see a
            mask[r, 0, start:end, start:end] = causal
            flat = r * width + start
            # a's first token is predicted at the prompt's last position, and so is b's.
            a_sources = [flat + p - 1 + t for t in range(a)]
            b_sources = [flat + p - 1] + [flat + p + a + t for t in range(b - 1)]
            sources += a_sources + b_sources
            targets += pair.response_a + pair.response_b
            owners += [i] * a + [count + i] * b
            start = end
        mask[r, 0, start:, start:] = torch.eye(width - start, dtype=torch.bool)  # padding: itself
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": mask,
        "sources": torch.tensor(sources, dtype=torch.long),
        "targets": torch.tensor(targets, dtype=torch.long),
        "owners": torch.tensor(owners, dtype=torch.long),
        "token_pairs": token_pairs,
        "signs": torch.tensor([p.signs for p in pairs], dtype=torch.float32),
    }


def pair_batch(
    pairs: Sequence[EncodedPair], pad_id: int, packing: bool = True, row_tokens: int = ROW_TOKENS
) -> dict[str, torch.Tensor]:
    """The batch of `pairs` that log-probs are computed on: packed, or padded rows
    (collate_pairs) with `packing` off (train.packing)."""
    return pack_pairs(pairs, pad_id, row_tokens) if packing else collate_pairs(pairs, pad_id)
