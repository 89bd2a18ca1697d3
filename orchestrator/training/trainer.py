"""The one trainer every method trains with: the adapter, its optimizer (through an engine) and
the order of λ and data, step by step.

Panacea draws λ per step; the baselines and SPO are the same trainer with fewer degrees of
freedom (a fixed λ, one objective, per-pair margins). The step's maths is algorithms/panacea.py;
the engine (training/engine.py) owns the optimizer and the gradient sync between data-parallel
ranks. Nothing here knows about Ray.
"""

import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from orchestrator.algorithms.panacea import objective_losses, reference_logprobs, steered
from orchestrator.config.sections import TrainSection
from orchestrator.data.batching import step_indices, steps_per_epoch
from orchestrator.data.encoding import EncodedPair
from orchestrator.data.packing import packed_length, pair_batch
from orchestrator.errors import MoaError
from orchestrator.model.checkpointing import checkpoint_layers
from orchestrator.model.svd_lora import freeze_anchor
from orchestrator.objectives import (
    PreferenceSampler,
    aggregate,
    aggregation_weights,
    non_tie_counts,
)
from orchestrator.training.engine import ADAPTER, LocalEngine, TrainedWeights
from orchestrator.training.reference_cache import cached_reference, keep_reference, reference_key


@dataclass
class StepResult:
    step: int  # optimizer steps done; this one trained with the λ and data of index step − 1
    loss: float  # the aggregated loss of the step's per-objective means
    objective_losses: list[float]
    preference: list[float]
    learning_rate: float
    tokens: int  # over all ranks
    seconds: float
    data_seconds: float  # collating micro-batches and their reference log-probs
    compute_seconds: float  # forward and backward passes
    optimizer_seconds: float  # gradient sync at the boundary, clipping, update

    def as_dict(self) -> dict:
        return {**self.__dict__, "tokens_per_s": self.tokens / max(self.seconds, 1e-9)}


class PairTrainer:
    """What every trainer on preference pairs shares: the pairs, the engine that updates the
    model, the steps done, and each step's data, a pure function of (seed, step): the global
    batch of batch_size × ranks × grad_accum_steps pairs, of which rank r takes the r-th slice."""

    weights: TrainedWeights = ADAPTER  # what the engine trains when the trainer makes it

    def __init__(
        self,
        model: nn.Module,
        pairs: list[EncodedPair],
        pad_id: int,
        cfg: TrainSection,
        engine: LocalEngine | None = None,
    ):
        if not pairs:
            raise MoaError("there are no training pairs: the training split is empty")
        self.model, self.pairs, self.pad_id, self.cfg = model, pairs, pad_id, cfg
        if cfg.gradient_checkpointing:
            checkpoint_layers(model)
        self.engine = engine or LocalEngine(model, cfg, self.weights)
        self.device = self.engine.parameters[0].device
        self.step = 0
        steps_per_epoch(len(pairs), self.global_batch)  # fails now if one batch does not fit

    @property
    def optimizer(self):
        return self.engine.optimizer

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.engine.world_size * self.cfg.grad_accum_steps

    @property
    def epoch_and_position(self) -> tuple[int, int]:
        """(epochs done, steps done in the current epoch) after `step` steps."""
        return divmod(self.step, steps_per_epoch(len(self.pairs), self.global_batch))

    def step_pairs(self) -> tuple[list[int], list[int]]:
        """(the indices of this step's global batch, this rank's slice of them)."""
        cfg, engine = self.cfg, self.engine
        indices = step_indices(len(self.pairs), self.global_batch, cfg.seed, self.step)
        share = cfg.batch_size * cfg.grad_accum_steps
        return indices, indices[engine.rank * share : (engine.rank + 1) * share]


class MultiObjectiveTrainer(PairTrainer):
    """Trains an SVD-LoRA adapter on per-objective losses of preference pairs, at a λ drawn per
    step (Panacea) or fixed, on this process's share of every global batch.

    λ for step t and the examples of step t are pure functions of (seed, t), so a resumed run
    repeats the same steps and data-parallel ranks draw the same λ without talking. The global
    batch is batch_size × ranks × grad_accum_steps pairs; rank r takes the r-th slice, cut into
    micro-batches. A step is exactly the step over the whole global batch, however it is cut:
    per-objective means are normalised by the global batch's non-tie counts, and Tche / STCH weight
    the objectives by the aggregation's gradient at the global means. The model runs in eval mode
    (dropout off, as TRL does by default), so policy and reference see the same network.
    `engine` (default: one process) owns the optimizer and combines the ranks' gradients.

    The baselines are the same trainer with fewer degrees of freedom: `preference` fixes λ for
    every step (RunConfig.fixed_preference), `objective` (an index) trains that objective's loss
    alone, and `margins` [pairs, m] are subtracted from each objective's DPO logit per pair.
    `reference` [pairs, 2]: the anchor's log-probs, when the caller has them already.
    `preferences` [pairs, m]: each pair's own λ (train.preference_per_pair), which the adapter
    runs at on that pair's rows; the step's λ, which aggregates, is their mean over its batch.
    """

    def __init__(
        self,
        model: nn.Module,
        pairs: list[EncodedPair],
        pad_id: int,
        cfg: TrainSection,
        engine: LocalEngine | None = None,
        *,
        preference: list[float] | None = None,
        objective: int | None = None,
        margins: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        preferences: torch.Tensor | None = None,
    ):
        super().__init__(model, pairs, pad_id, cfg, engine)
        self.num_objectives = len(pairs[0].signs)
        self.sampler = PreferenceSampler(self.num_objectives, cfg.vertex_probability, cfg.seed)
        self.fixed_preference = None if preference is None else torch.tensor(preference)
        self.objective = objective
        for name, tensor, width in (
            ("margins", margins, self.num_objectives),
            ("reference", reference, 2),
            ("preferences", preferences, self.num_objectives),
        ):
            if tensor is not None and tensor.shape != (len(pairs), width):
                raise MoaError(
                    f"{name} must have shape [{len(pairs)}, {width}]; got {list(tensor.shape)}"
                )
        if preferences is not None and any(len(set(p.signs)) != 1 for p in pairs):
            raise MoaError(
                "a λ per pair needs pairs whose labels agree on every objective (as SIPO's new "
                "pairs do): only then is the aggregated loss the same at every λ"
            )
        self.margins = margins
        self.reference = reference
        self.preferences = preferences
        if cfg.reference == "initial" and reference is None:
            freeze_anchor(model)  # before a checkpoint moves the adapter on

    def precompute_reference(self, progress: bool = False) -> None:
        """Reference log-probs of every pair, once: the anchor never changes (the base model, or
        the frozen initial adapter at a fixed λ). The pairs are cut into batches of batch_size in
        order, the same however many ranks there are; rank r computes batches r, r + ranks, …
        and all ranks gather the whole. π_ref's (reference "base") are kept in the reference
        cache (training/reference_cache.py) and taken from it when every rank finds them."""
        cfg, engine = self.cfg, self.engine
        key = None
        if cfg.reference == "base":
            key = reference_key(
                self.model, self.pairs, cfg.batch_size, cfg.packing, cfg.pack_tokens
            )
        found = cached_reference(key)
        everyone = engine.all_reduce_sum(torch.tensor(float(found is not None), device=self.device))
        if found is not None and int(everyone) == engine.world_size:
            self.reference = found
            return
        size, total, ranks = cfg.batch_size, len(self.pairs), engine.world_size
        starts = list(range(0, total, size))
        per_rank = -(-len(starts) // ranks)
        fixed = self.fixed_preference
        fixed = None if fixed is None else fixed.to(self.device)
        initial = cfg.reference == "initial"
        mine = torch.zeros(per_rank * size, 2, device=self.device)  # equal shapes to gather
        for i, start in enumerate(
            tqdm(starts[engine.rank :: ranks], desc="reference log-probs", disable=not progress)
        ):
            batch = self._collate(range(start, min(start + size, total)))
            logprobs = reference_logprobs(self.model, batch, fixed, initial=initial)
            mine[i * size : i * size + len(logprobs)] = logprobs
        gathered = engine.all_gather(mine)
        self.reference = torch.cat(
            [
                gathered[b % ranks][(b // ranks) * size :][: min(size, total - start)]
                for b, start in enumerate(starts)
            ]
        ).cpu()
        if engine.rank == 0:
            keep_reference(key, self.reference)

    def _collate(self, indices) -> dict[str, torch.Tensor]:
        indices = list(indices)
        pairs = [self.pairs[i] for i in indices]
        batch = pair_batch(pairs, self.pad_id, self.cfg.packing, self.cfg.pack_tokens)
        if self.reference is not None:
            batch["reference_logps"] = self.reference[indices]
        if self.margins is not None:
            batch["margins"] = self.margins[indices]
        if self.preferences is not None:
            batch["preferences"] = self.preferences[indices]
        return {name: tensor.to(self.device) for name, tensor in batch.items()}

    def _training_batch(self, indices, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        """A micro-batch that carries its reference log-probs, so that no pass of the step
        computes them again."""
        batch = self._collate(indices)
        if self.cfg.loss == "dpo" and "reference_logps" not in batch:
            initial = self.cfg.reference == "initial"
            batch["reference_logps"] = reference_logprobs(self.model, batch, pref, initial=initial)
        return batch

    def train_step(self) -> StepResult:
        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        cfg, engine = self.cfg, self.engine
        indices, mine = self.step_pairs()
        pref = self.preference_at(self.step, indices).to(self.device)
        counts = non_tie_counts(torch.tensor([self.pairs[i].signs for i in indices])).to(
            self.device
        )
        share = len(mine)
        batches = [
            self._training_batch(mine[i : i + cfg.batch_size], pref)
            for i in range(0, share, cfg.batch_size)
        ]
        data_done = time.perf_counter()
        # LS is linear: the micro-batches' aggregated losses add up to the step's. Tche and STCH
        # are not, so when the step is cut, find its means first, then weight each objective by
        # the aggregation's gradient there.
        weights = None
        aggregated = self.objective is None and cfg.aggregation != "ls"
        if len(batches) * engine.world_size > 1 and aggregated:
            with torch.no_grad():
                means = sum(objective_losses(engine.module, b, pref, cfg, counts) for b in batches)
            means = engine.all_reduce_sum(means)
            weights = aggregation_weights(means, pref, cfg.aggregation, mu=cfg.stch_mu)
        per_objective = torch.zeros(self.num_objectives, device=self.device)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            # λ stays set through the backward pass, which runs checkpointed layers again.
            with engine.micro_batch(last), steered(engine.module, batch, pref):
                losses = objective_losses(engine.module, batch, pref, cfg, counts)
                loss = self.aggregate(losses, pref) if weights is None else weights @ losses
                engine.backward(loss, last)
            per_objective += losses.detach()
        compute_done = time.perf_counter()
        learning_rate = engine.step()
        self.model.train(was_training)
        self.step += 1
        per_objective = engine.all_reduce_sum(per_objective)
        # The pairs' own tokens (prompt, a, b), whichever layout computed them.
        tokens = engine.all_reduce_sum(
            torch.tensor(sum(packed_length(self.pairs[i]) for i in mine), device=self.device)
        )
        end = time.perf_counter()
        return StepResult(
            step=self.step,
            loss=self.aggregate(per_objective, pref).item(),
            objective_losses=per_objective.tolist(),
            preference=pref.tolist(),
            learning_rate=learning_rate,
            tokens=int(tokens),
            seconds=end - start,
            data_seconds=data_done - start,
            compute_seconds=compute_done - data_done,
            optimizer_seconds=end - compute_done,
        )

    def preference_at(self, step: int, indices: list[int]) -> torch.Tensor:
        """λ of step `step` on the pairs `indices`: the fixed one, the mean of the pairs' own, or
        a draw that depends only on (seed, step)."""
        if self.fixed_preference is not None:
            return self.fixed_preference
        if self.preferences is not None:
            return self.preferences[indices].mean(dim=0)
        return self.sampler.sample(step)

    def aggregate(self, losses: torch.Tensor, pref: torch.Tensor) -> torch.Tensor:
        """The loss trained on: the one objective's, or the aggregation of all at λ."""
        if self.objective is not None:
            return losses[self.objective]
        return aggregate(losses, pref, self.cfg.aggregation, mu=self.cfg.stch_mu)

    def train(self, progress: bool = True) -> list[StepResult]:
        """Every step left, in this process (training/loop.py runs a whole run's rank)."""
        self.prepare(progress)
        history = []
        bar = tqdm(total=self.cfg.max_steps, initial=self.step, desc="train", disable=not progress)
        while self.step < self.cfg.max_steps:
            result = self.train_step()
            history.append(result)
            bar.update(1)
            bar.set_postfix(
                loss=f"{result.loss:.4f}", tok_s=f"{result.as_dict()['tokens_per_s']:.0f}"
            )
        bar.close()
        return history

    def prepare(self, progress: bool = False) -> None:
        """Work done once before the first step: the reference log-probs, when precomputed (the
        base model's, or the initial adapter's at a fixed λ; with λ sampled per step, the
        initial adapter's depend on the step)."""
        cfg = self.cfg
        fixed = (
            cfg.reference == "base"
            or self.fixed_preference is not None
            or self.preferences is not None
        )
        if cfg.loss == "dpo" and cfg.precompute_reference and fixed and self.reference is None:
            self.precompute_reference(progress)
