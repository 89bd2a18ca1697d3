"""Which examples each optimizer step sees: a seeded permutation per epoch, cut into global batches.

A pure function of (seed, step), so a resumed run sees exactly the batches it would have seen, and
every data-parallel rank can take its own slice of the same global batch.
"""

import torch

from orchestrator.errors import MoaError


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    if global_batch < 1:
        raise MoaError(f"global batch size must be ≥ 1; got {global_batch}")
    steps = num_examples // global_batch
    if steps == 0:
        raise MoaError(
            f"the dataset has {num_examples} examples, "
            f"fewer than one global batch of {global_batch}"
        )
    return steps


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator)


def step_indices(num_examples: int, global_batch: int, seed: int, step: int) -> list[int]:
    """The example indices of optimizer step `step` (an epoch's last partial batch is dropped)."""
    per_epoch = steps_per_epoch(num_examples, global_batch)
    epoch, position = divmod(step, per_epoch)
    order = epoch_permutation(num_examples, seed, epoch)
    return order[position * global_batch : (position + 1) * global_batch].tolist()
