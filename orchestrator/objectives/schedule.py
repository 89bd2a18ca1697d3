"""The learning-rate schedule every trainer here uses: linear warm-up, then cosine decay."""

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, final_fraction: float) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    Rises linearly over `warmup_steps`, then follows a half cosine down to `final_fraction` at
    `total_steps`, and stays there.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
