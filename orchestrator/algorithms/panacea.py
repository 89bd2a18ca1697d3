"""Panacea: one SVD-LoRA model for every preference, trained with λ sampled per step.

`panacea_loss` is the training step's maths on one micro-batch; `PanaceaTrainer` owns the
optimizer, schedule, λ sampling and data order. Neither knows about processes or Ray: a Ray Train
worker runs the same trainer on its shard (the model may be wrapped in DDP).
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from orchestrator.config import TrainSection
from orchestrator.data.batching import step_indices
from orchestrator.data.encoding import EncodedPair, collate_pairs
from orchestrator.model.svd_lora import adapter_disabled, adapter_parameters, set_preference
from orchestrator.objectives import (
    PreferenceSampler,
    aggregate,
    per_objective_dpo_losses,
    per_objective_sft_losses,
    sequence_logprobs,
)


def policy_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Summed response log-probs and response lengths of the a rows and the b rows."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps, lengths = sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"])
    half = batch["signs"].shape[0]
    return logps[:half], logps[half:], lengths[:half], lengths[half:]


@torch.no_grad()
def reference_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, 2] log-probs of responses a and b under π_ref: the base model, adapter switched off."""
    with adapter_disabled(model):
        ref_a, ref_b, _, _ = policy_logprobs(model, batch)
    return torch.stack([ref_a, ref_b], dim=-1)


def panacea_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], pref: torch.Tensor, cfg: TrainSection
) -> tuple[torch.Tensor, torch.Tensor]:
    """(aggregated loss, per-objective losses [m]) of one micro-batch at preference λ."""
    set_preference(model, pref)
    logp_a, logp_b, len_a, len_b = policy_logprobs(model, batch)
    signs = batch["signs"]
    if cfg.loss == "sft":
        losses = per_objective_sft_losses(logp_a, logp_b, len_a, len_b, signs)
    else:
        reference = batch.get("reference_logps")
        if reference is None:
            reference = reference_logprobs(model, batch)
        losses = per_objective_dpo_losses(
            logp_a,
            logp_b,
            reference[:, 0],
            reference[:, 1],
            signs,
            beta=cfg.beta,
            nll_weight=cfg.nll_weight,
            lengths_a=len_a,
            lengths_b=len_b,
        )
    return aggregate(losses, pref.to(losses.device), cfg.aggregation, mu=cfg.stch_mu), losses


@dataclass
class StepResult:
    step: int
    loss: float
    objective_losses: list[float]
    preference: list[float]
    learning_rate: float
    tokens: int
    seconds: float

    def as_dict(self) -> dict:
        return {**self.__dict__, "tokens_per_s": self.tokens / max(self.seconds, 1e-9)}


class PanaceaTrainer:
    """AdamW on the adapter tensors only, warm-up then cosine decay, one λ per optimizer step.

    λ for step t and the examples of step t are pure functions of (seed, t), so every rank of a
    data-parallel run draws the same λ and a resumed run repeats the same steps.
    """

    def __init__(self, model: nn.Module, pairs: list[EncodedPair], pad_id: int, cfg: TrainSection):
        self.model, self.pairs, self.pad_id, self.cfg = model, pairs, pad_id, cfg
        self.num_objectives = len(pairs[0].signs)
        self.optimizer = torch.optim.AdamW(
            adapter_parameters(model).values(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.sampler = PreferenceSampler(self.num_objectives, cfg.vertex_probability, cfg.seed)
        self.reference: torch.Tensor | None = None
        self.step = 0

    def _lr_factor(self, step: int) -> float:
        if step < self.cfg.warmup_steps:
            return (step + 1) / self.cfg.warmup_steps
        span = max(1, self.cfg.max_steps - self.cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (
            1 + math.cos(math.pi * min(1.0, (step - self.cfg.warmup_steps) / span))
        )

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum_steps

    def device(self) -> torch.device:
        return next(iter(adapter_parameters(self.model).values())).device

    def precompute_reference(self, progress: bool = False) -> None:
        """Reference log-probs of every pair, once: the base model never changes."""
        chunks = range(0, len(self.pairs), self.cfg.batch_size)
        parts = [
            reference_logprobs(
                self.model, self._collate(range(i, min(i + self.cfg.batch_size, len(self.pairs))))
            )
            for i in tqdm(chunks, desc="reference log-probs", disable=not progress)
        ]
        self.reference = torch.cat(parts).cpu()

    def _collate(self, indices) -> dict[str, torch.Tensor]:
        indices = list(indices)
        batch = collate_pairs([self.pairs[i] for i in indices], self.pad_id)
        if self.reference is not None:
            batch["reference_logps"] = self.reference[indices]
        return {name: tensor.to(self.device()) for name, tensor in batch.items()}

    def train_step(self) -> StepResult:
        start = time.perf_counter()
        self.model.train()
        pref = self.sampler.sample(self.step)
        indices = step_indices(len(self.pairs), self.global_batch, self.cfg.seed, self.step)
        total, per_objective, tokens = 0.0, torch.zeros(self.num_objectives), 0
        for micro in range(self.cfg.grad_accum_steps):
            batch = self._collate(
                indices[micro * self.cfg.batch_size : (micro + 1) * self.cfg.batch_size]
            )
            loss, losses = panacea_loss(self.model, batch, pref, self.cfg)
            (loss / self.cfg.grad_accum_steps).backward()
            total += loss.item() / self.cfg.grad_accum_steps
            per_objective += losses.detach().cpu() / self.cfg.grad_accum_steps
            tokens += int(batch["attention_mask"].sum())
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                adapter_parameters(self.model).values(), self.cfg.max_grad_norm
            )
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return StepResult(
            self.step,
            total,
            per_objective.tolist(),
            pref.tolist(),
            learning_rate,
            tokens,
            time.perf_counter() - start,
        )

    def train(
        self, progress: bool = True, on_step: Callable[[StepResult], None] | None = None
    ) -> list[StepResult]:
        if self.cfg.loss == "dpo" and self.cfg.precompute_reference and self.reference is None:
            self.precompute_reference(progress)
        history = []
        bar = tqdm(
            total=self.cfg.max_steps, initial=self.step, desc="panacea", disable=not progress
        )
        while self.step < self.cfg.max_steps:
            result = self.train_step()
            history.append(result)
            if on_step is not None:
                on_step(result)
            bar.update(1)
            bar.set_postfix(
                loss=f"{result.loss:.4f}", tok_s=f"{result.as_dict()['tokens_per_s']:.0f}"
            )
        bar.close()
        return history
