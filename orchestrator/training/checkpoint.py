"""A training checkpoint: everything a run needs to continue exactly where it stopped.

    adapter/        the SVD-LoRA adapter at that step (load_adapter reads it)
    optimizer.pt    AdamW and schedule state (or deepspeed/ with ZeRO's partitions)
    rng.pt          Python, NumPy and torch generator states of rank 0
    state.json      step, epoch, position in the epoch, global batch, seed

λ and the data order are pure functions of (seed, step), so the step is the data position; the
epoch and position are recorded to read and to check. Nothing here knows about Ray: the
distributed trainer writes a checkpoint into a local folder and hands it to Ray Train.
"""

import json
import random
from pathlib import Path

import numpy as np
import torch

from orchestrator.errors import MoaError
from orchestrator.training.trainer import MultiObjectiveTrainer

STATE = "state.json"
RNG = "rng.pt"


def save_checkpoint(
    directory: Path, trainer: MultiObjectiveTrainer, metrics: dict | None = None
) -> None:
    """Write the trainer's state into `directory` (every rank calls this; rank 0 writes most)."""
    directory.mkdir(parents=True, exist_ok=True)
    trainer.engine.save(directory)
    if trainer.engine.rank != 0:
        return
    epoch, position = trainer.epoch_and_position
    state = {
        "step": trainer.step,
        "epoch": epoch,
        "position": position,
        "global_batch": trainer.global_batch,
        "seed": trainer.cfg.seed,
        "metrics": metrics or {},
    }
    torch.save(rng_state(), directory / RNG)
    (directory / STATE).write_text(json.dumps(state, indent=2))


def load_checkpoint(directory: Path, trainer: MultiObjectiveTrainer) -> dict:
    """Restore the trainer from `directory`; returns its state.json."""
    state = read_state(directory)
    if state["global_batch"] != trainer.global_batch or state["seed"] != trainer.cfg.seed:
        raise MoaError(
            f"checkpoint {directory} was written with global batch {state['global_batch']} and "
            f"train.seed {state['seed']}; this run has {trainer.global_batch} "
            "(train.batch_size × scaling.num_workers × train.grad_accum_steps) and "
            f"{trainer.cfg.seed}. Resume with the same values, or the data order would change."
        )
    trainer.engine.load(directory)
    trainer.step = state["step"]
    set_rng_state(torch.load(directory / RNG, weights_only=False))
    return state


def read_state(directory: Path) -> dict:
    path = Path(directory) / STATE
    if not path.is_file():
        raise MoaError(f"{directory} is not a training checkpoint: {STATE} is missing")
    return json.loads(path.read_text())


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
