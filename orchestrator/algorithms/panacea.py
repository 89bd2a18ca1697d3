"""Panacea: one SVD-LoRA model for every preference, trained with λ sampled per step.

`objective_losses` / `panacea_loss` are the training step's maths on one batch; `PanaceaTrainer`
owns the optimizer, schedule, λ sampling and data order. Neither knows about processes or Ray;
the step is written so a Ray Train worker can run it on its shard of each global batch.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from orchestrator.config import TrainSection
from orchestrator.data.batching import step_indices
from orchestrator.data.encoding import EncodedPair, collate_pairs
from orchestrator.errors import MoaError
from orchestrator.model.svd_lora import adapter_disabled, adapter_parameters, preference
from orchestrator.objectives import (
    PreferenceSampler,
    aggregate,
    aggregation_weights,
    non_tie_counts,
    per_objective_dpo_losses,
    per_objective_sft_losses,
    sequence_logprobs,
)
from orchestrator.schedule import warmup_cosine


def policy_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Summed response log-probs and response lengths of the a rows and the b rows."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps, lengths = sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"])
    half = batch["signs"].shape[0]
    return logps[:half], logps[half:], lengths[:half], lengths[half:]


@torch.no_grad()
def reference_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, 2] log-probs of responses a and b under π_ref: the base model, adapter switched off.

    Always in eval mode (no dropout), so the reference is the same whether computed per step or
    precomputed once.
    """
    was_training = model.training
    model.eval()
    try:
        with adapter_disabled(model):
            ref_a, ref_b, _, _ = policy_logprobs(model, batch)
    finally:
        model.train(was_training)
    return torch.stack([ref_a, ref_b], dim=-1)


def objective_losses(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    pref: torch.Tensor,
    cfg: TrainSection,
    normalizer: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-objective losses [m] of one micro-batch with the model at preference λ.

    `normalizer` [m]: the non-tie pairs per objective of the whole optimizer step, so that the
    micro-batches' losses add up to the step's means (default: this batch's own counts).
    """
    with preference(model, pref):
        logp_a, logp_b, len_a, len_b = policy_logprobs(model, batch)
    signs = batch["signs"]
    if cfg.loss == "sft":
        return per_objective_sft_losses(logp_a, logp_b, len_a, len_b, signs, normalizer)
    reference = batch.get("reference_logps")
    if reference is None:
        reference = reference_logprobs(model, batch)
    return per_objective_dpo_losses(
        logp_a,
        logp_b,
        reference[:, 0],
        reference[:, 1],
        signs,
        beta=cfg.beta,
        nll_weight=cfg.nll_weight,
        lengths_a=len_a,
        lengths_b=len_b,
        normalizer=normalizer,
    )


def panacea_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], pref: torch.Tensor, cfg: TrainSection
) -> tuple[torch.Tensor, torch.Tensor]:
    """(aggregated loss, per-objective losses [m]) of one batch at preference λ."""
    losses = objective_losses(model, batch, pref, cfg)
    return aggregate(losses, pref.to(losses.device), cfg.aggregation, mu=cfg.stch_mu), losses


@dataclass
class StepResult:
    step: int  # optimizer steps done; this one trained with the λ and data of index step − 1
    loss: float  # the aggregated loss of the step's per-objective means
    objective_losses: list[float]
    preference: list[float]
    learning_rate: float
    tokens: int
    seconds: float

    def as_dict(self) -> dict:
        return {**self.__dict__, "tokens_per_s": self.tokens / max(self.seconds, 1e-9)}


class PanaceaTrainer:
    """AdamW on the adapter tensors only, warm-up then cosine decay, one λ per optimizer step.

    λ for step t and the examples of step t are pure functions of (seed, t), so a resumed run
    repeats the same steps and data-parallel ranks can draw the same λ without talking.
    A step is exactly the step over its whole global batch, however it is cut into micro-batches:
    per-objective means are normalised by the step's non-tie counts, and Tche / STCH weight the
    objectives by the aggregation's gradient at the step's means. The model runs in eval mode
    (dropout off, as TRL does by default), so policy and reference see the same network.
    """

    def __init__(self, model: nn.Module, pairs: list[EncodedPair], pad_id: int, cfg: TrainSection):
        if not pairs:
            raise MoaError("there are no training pairs: the training split is empty")
        self.model, self.pairs, self.pad_id, self.cfg = model, pairs, pad_id, cfg
        self.num_objectives = len(pairs[0].signs)
        self.parameters = list(adapter_parameters(model).values())
        self.device = self.parameters[0].device
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: warmup_cosine(step, cfg.warmup_steps, cfg.max_steps, final_fraction=0.1),
        )
        self.sampler = PreferenceSampler(self.num_objectives, cfg.vertex_probability, cfg.seed)
        self.reference: torch.Tensor | None = None
        self.step = 0

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum_steps

    def precompute_reference(self, progress: bool = False) -> None:
        """Reference log-probs of every pair, once: the base model never changes."""
        size = self.cfg.batch_size
        starts = range(0, len(self.pairs), size)
        parts = [
            reference_logprobs(self.model, self._collate(range(i, min(i + size, len(self.pairs)))))
            for i in tqdm(starts, desc="reference log-probs", disable=not progress)
        ]
        self.reference = torch.cat(parts).cpu()

    def _collate(self, indices) -> dict[str, torch.Tensor]:
        indices = list(indices)
        batch = collate_pairs([self.pairs[i] for i in indices], self.pad_id)
        if self.reference is not None:
            batch["reference_logps"] = self.reference[indices]
        return {name: tensor.to(self.device) for name, tensor in batch.items()}

    def _training_batch(self, indices) -> dict[str, torch.Tensor]:
        """A micro-batch that carries its reference log-probs, so that no pass of the step
        computes them again."""
        batch = self._collate(indices)
        if self.cfg.loss == "dpo" and "reference_logps" not in batch:
            batch["reference_logps"] = reference_logprobs(self.model, batch)
        return batch

    def train_step(self) -> StepResult:
        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        cfg = self.cfg
        pref = self.sampler.sample(self.step).to(self.device)
        indices = step_indices(len(self.pairs), self.global_batch, cfg.seed, self.step)
        counts = non_tie_counts(torch.tensor([self.pairs[i].signs for i in indices])).to(
            self.device
        )
        batches = [
            self._training_batch(indices[i : i + cfg.batch_size])
            for i in range(0, len(indices), cfg.batch_size)
        ]
        # LS is linear: the micro-batches' aggregated losses add up to the step's. Tche and STCH
        # are not, so with several micro-batches find the step's means first, then weight each
        # objective by the aggregation's gradient there.
        weights = None
        if len(batches) > 1 and cfg.aggregation != "ls":
            with torch.no_grad():
                means = sum(objective_losses(self.model, b, pref, cfg, counts) for b in batches)
            weights = aggregation_weights(means, pref, cfg.aggregation, mu=cfg.stch_mu)
        per_objective = torch.zeros(self.num_objectives, device=self.device)
        for batch in batches:
            losses = objective_losses(self.model, batch, pref, cfg, counts)
            if weights is None:
                loss = aggregate(losses, pref, cfg.aggregation, mu=cfg.stch_mu)
            else:
                loss = (weights * losses).sum()
            loss.backward()
            per_objective += losses.detach()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, cfg.max_grad_norm)
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.train(was_training)
        self.step += 1
        return StepResult(
            step=self.step,
            loss=aggregate(per_objective, pref, cfg.aggregation, mu=cfg.stch_mu).item(),
            objective_losses=per_objective.tolist(),
            preference=pref.tolist(),
            learning_rate=learning_rate,
            tokens=sum(int(b["attention_mask"].sum()) for b in batches),
            seconds=time.perf_counter() - start,
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
