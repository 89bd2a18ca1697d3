"""The reward-model trainer: the reward model(s)' trainable weights (every weight, or LoRA adapters
and the heads) trained with the Bradley–Terry loss of each objective on the pairs' labels, step
by step, through the same engines, data order and checkpoints as the policy trainer.

A step's examples are a pure function of (seed, step), so a resumed run repeats the same steps;
each objective's loss is normalised by the global batch's non-tie count, so a step is the same
however ranks and micro-batches cut it. The trained loss is the sum over objectives.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from orchestrator.algorithms.reward_model import correct_orders, pair_rewards
from orchestrator.data.encoding import collate_pairs
from orchestrator.errors import MoaError
from orchestrator.objectives.losses import bradley_terry_losses, non_tie_counts
from orchestrator.training.engine import TrainedWeights
from orchestrator.training.trainer import PairTrainer

WEIGHTS = "reward_model.safetensors"  # a checkpoint's copy of the trained weights


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _save_weights(model: nn.Module, directory: Path) -> None:
    tensors = {name: p.detach().cpu().contiguous() for name, p in _trainable(model).items()}
    save_file(tensors, directory / WEIGHTS)


def _load_weights(model: nn.Module, directory: Path) -> None:
    tensors = load_file(directory / WEIGHTS)
    expected = _trainable(model)
    if tensors.keys() != expected.keys():
        raise MoaError(f"{directory / WEIGHTS} holds other tensors than this reward model trains")
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor)


# What trains of the reward model(s): backbone and heads, or LoRA adapters and heads.
TRAINABLE_WEIGHTS = TrainedWeights(
    parameters=lambda model: list(_trainable(model).values()),
    save=_save_weights,
    load=_load_weights,
)


@dataclass
class RewardStep:
    step: int
    loss: float  # the sum of the objectives' losses
    objective_losses: list[float]
    accuracy: list[float]  # per objective: the step's non-tie pairs ordered right before the update
    learning_rate: float
    tokens: int  # over all ranks
    seconds: float

    def as_dict(self) -> dict:
        return {**self.__dict__, "tokens_per_s": self.tokens / max(self.seconds, 1e-9)}


class RewardTrainer(PairTrainer):
    weights = TRAINABLE_WEIGHTS

    def prepare(self) -> None:
        """Nothing to compute before the first step (the policy trainer's reference pass)."""

    def train_step(self) -> RewardStep:
        start = time.perf_counter()
        self.model.eval()  # dropout off, as for the policy
        cfg, engine = self.cfg, self.engine
        indices, mine = self.step_pairs()
        signs = torch.tensor([self.pairs[i].signs for i in indices])
        counts = non_tie_counts(signs).to(self.device)
        share = len(mine)
        m = signs.shape[1]
        per_objective = torch.zeros(m, device=self.device)
        right = torch.zeros(m, device=self.device)
        tokens = torch.zeros((), device=self.device)
        for i in range(0, share, cfg.batch_size):
            chunk = [self.pairs[j] for j in mine[i : i + cfg.batch_size]]
            batch = {k: v.to(self.device) for k, v in collate_pairs(chunk, self.pad_id).items()}
            with engine.micro_batch(i + cfg.batch_size >= share):
                rewards_a, rewards_b = pair_rewards(engine.module, batch)
                losses = bradley_terry_losses(rewards_a, rewards_b, batch["signs"], counts)
                engine.backward(losses.sum(), i + cfg.batch_size >= share)
            per_objective += losses.detach()
            right += correct_orders(rewards_a.detach(), rewards_b.detach(), batch["signs"])[0]
            tokens += batch["attention_mask"].sum()
        learning_rate = engine.step()
        self.step += 1
        per_objective = engine.all_reduce_sum(per_objective)
        right = engine.all_reduce_sum(right)
        tokens = engine.all_reduce_sum(tokens)
        return RewardStep(
            step=self.step,
            loss=per_objective.sum().item(),
            objective_losses=per_objective.tolist(),
            accuracy=(right / counts).tolist(),
            learning_rate=learning_rate,
            tokens=int(tokens),
            seconds=time.perf_counter() - start,
        )
