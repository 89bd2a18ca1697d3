"""One rank of a training run, whoever launches it: the model and trainer its config describes, a
checkpoint restored, the reference log-probs precomputed, then every step with its evaluation,
logging and checkpoints, and the adapter saved at the end; or the same for reward models
(train_reward_rank, `moa reward`), which save reward_model/ at the end.

distributed/train.py runs it on each Ray Train worker and hands in what comes from Ray: the
device, the checkpoint to continue from, how a checkpoint leaves the rank, the progress bar. Run
with the defaults, it is the same run in this process, on one rank.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from orchestrator.config import RunConfig
from orchestrator.data.encoding import encode_pairs
from orchestrator.data.schema import PairDataset
from orchestrator.model.adapter_io import save_adapter
from orchestrator.model.build import build_model
from orchestrator.model.loading import load_tokenizer
from orchestrator.model.reward_model import REWARD_MODEL, build_reward_model, save_reward_model
from orchestrator.training.engine import build_engine
from orchestrator.training.metrics_log import MetricsLogger
from orchestrator.training.reward_trainer import TRAINABLE_WEIGHTS, RewardTrainer
from orchestrator.training.selection import BestAdapter
from orchestrator.training.trainer import MultiObjectiveTrainer


@dataclass
class Launch:
    """Where a rank runs and how its results leave it."""

    rank: int = 0
    device: str = "cpu"
    # Loads the checkpoint to continue from into the trainer, when there is one.
    restore: Callable[[MultiObjectiveTrainer], None] | None = None
    # Called at every checkpoint step (checkpoint.every, and the last) with the step's metrics.
    on_checkpoint: Callable[[MultiObjectiveTrainer, dict], None] | None = None
    before_step: Callable[[int], None] | None = None  # called with the steps done so far


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_rank(
    cfg: RunConfig,
    run_dir: Path,
    pairs: PairDataset,
    launch: Launch | None = None,
    *,
    margins: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> None:
    """Train this rank's share of the run in `run_dir` to train.max_steps; rank 0 writes
    metrics.jsonl (and TensorBoard, MLflow), best/ and, at the end, adapter/. `margins` and
    `reference` go to the trainer (MultiObjectiveTrainer)."""
    launch = launch or Launch()
    rank0 = launch.rank == 0
    seed_everything(cfg.train.seed)
    tokenizer, model = build_model(cfg, device=launch.device)
    data = cfg.data
    encoded = encode_pairs(tokenizer, pairs, data.max_prompt_tokens, data.max_response_tokens)
    engine = build_engine(model, cfg.train, cfg.scaling.strategy, cfg.scaling.deepspeed)
    objective = cfg.train.objective
    trainer = MultiObjectiveTrainer(
        model,
        encoded,
        tokenizer.pad_token_id,
        cfg.train,
        engine,
        preference=cfg.fixed_preference,
        objective=None if objective is None else data.objectives.index(objective),
        margins=margins,
        reference=reference,
        preferences=torch.tensor(pairs.preferences()) if cfg.train.preference_per_pair else None,
    )
    if launch.restore is not None:
        launch.restore(trainer)
    trainer.prepare()
    selection = None
    if rank0 and cfg.eval.enabled and cfg.eval.every > 0:
        selection = BestAdapter(cfg, model, tokenizer, run_dir)
    run_steps(cfg, run_dir, trainer, launch, selection)
    with engine.full_parameters():
        if rank0:
            save_adapter(model, run_dir / "adapter")


def train_reward_rank(
    cfg: RunConfig, run_dir: Path, pairs: PairDataset, launch: Launch | None = None
) -> None:
    """Train this rank's share of the reward-model run in `run_dir` (`moa reward`) to
    train.max_steps; rank 0 writes metrics.jsonl and, at the end, reward_model/."""
    launch = launch or Launch()
    seed_everything(cfg.train.seed)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    objectives, data = cfg.data.objectives, cfg.data
    model = build_reward_model(
        cfg.model.name_or_path,
        objectives,
        cfg.reward.per_objective,
        tokenizer.pad_token_id,
        cfg.model.dtype,
        cfg.reward.lora_rank,
        cfg.reward.lora_alpha,
    ).to(launch.device)
    encoded = encode_pairs(tokenizer, pairs, data.max_prompt_tokens, data.max_response_tokens)
    strategy, ds_cfg = cfg.scaling.strategy, cfg.scaling.deepspeed
    engine = build_engine(model, cfg.train, strategy, ds_cfg, weights=TRAINABLE_WEIGHTS)
    trainer = RewardTrainer(model, encoded, tokenizer.pad_token_id, cfg.train, engine)
    if launch.restore is not None:
        launch.restore(trainer)
    run_steps(cfg, run_dir, trainer, launch)
    with engine.full_parameters():
        if launch.rank == 0:
            save_reward_model(model, tokenizer, run_dir / REWARD_MODEL)


def run_steps(cfg: RunConfig, run_dir: Path, trainer, launch: Launch, selection=None) -> None:
    """Every step left of `trainer` (a MultiObjectiveTrainer or RewardTrainer): `selection`
    evaluated every eval.every steps, logged by rank 0 every train.log_every (metrics.jsonl,
    TensorBoard, MLflow), checkpoints every checkpoint.every, each at the last step too."""
    logger = None
    if launch.rank == 0:
        logger = MetricsLogger(run_dir, cfg.logging, cfg.model_dump(), resume_step=trainer.step)
    while trainer.step < cfg.train.max_steps:
        if launch.before_step is not None:
            launch.before_step(trainer.step)
        metrics = trainer.train_step().as_dict()
        step, last = trainer.step, trainer.step == cfg.train.max_steps
        metrics["epoch"], metrics["position"] = trainer.epoch_and_position
        evaluated = selection is not None and (step % cfg.eval.every == 0 or last)
        if evaluated:
            metrics.update(selection.evaluate(step))
        if logger is not None and (evaluated or step % cfg.train.log_every == 0 or last):
            logger.log(metrics)
        if launch.on_checkpoint is not None and (step % cfg.checkpoint.every == 0 or last):
            launch.on_checkpoint(trainer, metrics)
    if logger is not None:
        logger.close()
