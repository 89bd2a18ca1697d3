"""Panacea's training step on one batch (ALGORITHMS.md §1): the policy's and the anchor's
response log-probs, every objective's loss at preference λ, and their aggregation.

Every method trains through these (training/trainer.py): the baselines and SPO are the same
losses with λ fixed, one objective alone, or per-pair margins. Nothing here knows about Ray.
"""

import torch
from torch import nn

from orchestrator.config.sections import TrainSection
from orchestrator.model.forward import (
    accepts_logits_to_keep,
    as_model_mask,
    hidden_states_as_logits,
    logit_chunk_tokens,
)
from orchestrator.model.svd_lora import (
    adapter_disabled,
    anchored,
    preference,
    token_preferences,
    unwrap,
)
from orchestrator.objectives import (
    aggregate,
    per_objective_dpo_losses,
    per_objective_sft_losses,
    response_logprobs,
    sequence_logprobs,
)


def policy_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Summed response log-probs and response lengths of the a responses and the b responses,
    from a padded batch (collate_pairs) or a packed one (pack_pairs)."""
    if "sources" in batch:
        logps, lengths = _packed_logprobs(model, batch)
    else:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = model(**inputs, use_cache=False).logits
        logps, lengths = sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"])
    half = batch["signs"].shape[0]
    return logps[:half], logps[half:], lengths[:half], lengths[half:]


def _packed_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """One forward pass over the packed rows to the final hidden states at the positions that
    predict a response token (with one row, exactly those; with several, the positions any row
    needs); the output head then runs on those tokens alone, a chunk at a time
    (model/forward.py), so a large vocabulary's logits never exist for all of them at once."""
    sources, width = batch["sources"], batch["input_ids"].shape[1]
    rows, positions = sources // width, sources % width
    kept, columns = torch.unique(positions, return_inverse=True)
    options = {"logits_to_keep": kept} if accepts_logits_to_keep(model) else {}
    with hidden_states_as_logits(model) as head:
        outputs = model(
            input_ids=batch["input_ids"],
            attention_mask=as_model_mask(
                unwrap(model), batch["attention_mask"], unwrap(model).dtype
            ),
            position_ids=batch["position_ids"],
            use_cache=False,
            **options,
        ).logits
    picked = outputs[rows, columns if options else positions]
    return response_logprobs(
        picked,
        batch["targets"],
        batch["owners"],
        2 * batch["signs"].shape[0],
        head=head,
        chunk=None if head is None else logit_chunk_tokens(head),
    )


@torch.no_grad()
def reference_logprobs(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    pref: torch.Tensor | None = None,
    *,
    initial: bool = False,
) -> torch.Tensor:
    """[B, 2] log-probs of responses a and b under the DPO anchor: π_ref, the base model with the
    adapter switched off; or, when `initial`, the frozen anchor adapter (freeze_anchor) at the
    batch's λ (`steered`: `pref`, or each pair's own).

    Always in eval mode (no dropout), so the reference is the same whether computed per step or
    precomputed once.
    """
    was_training = model.training
    model.eval()
    try:
        if initial:
            with anchored(model), steered(model, batch, pref):
                ref_a, ref_b, _, _ = policy_logprobs(model, batch)
        else:
            with adapter_disabled(model):
                ref_a, ref_b, _, _ = policy_logprobs(model, batch)
    finally:
        model.train(was_training)
    return torch.stack([ref_a, ref_b], dim=-1)


def row_preferences(
    batch: dict[str, torch.Tensor], pref: torch.Tensor | None
) -> torch.Tensor | None:
    """The λ the model runs at on the batch's 2B rows (responses a, then b): each pair's own
    ("preferences" [B, m], train.preference_per_pair), else `pref` for every row."""
    own = batch.get("preferences")
    return pref if own is None else torch.cat([own, own])


def steered(model: nn.Module, batch: dict[str, torch.Tensor], pref: torch.Tensor | None):
    """The model at the batch's λ: `pref` for every row, or each pair's own (row_preferences;
    per token in a packed batch, whose rows hold several pairs)."""
    own = batch.get("preferences")
    if own is not None and "token_pairs" in batch:
        return token_preferences(model, own, batch["token_pairs"])
    return preference(model, row_preferences(batch, pref))


def objective_losses(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    pref: torch.Tensor,
    cfg: TrainSection,
    normalizer: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-objective losses [m] of one micro-batch with the model at preference λ (or at each
    pair's own, row_preferences).

    `normalizer` [m]: the non-tie pairs per objective of the whole optimizer step, so that the
    micro-batches' losses add up to the step's means (default: this batch's own counts). A batch
    with "margins" [B, m] subtracts them from each objective's DPO logit.
    """
    with steered(model, batch, pref):
        logp_a, logp_b, len_a, len_b = policy_logprobs(model, batch)
    signs = batch["signs"]
    if cfg.loss == "sft":
        return per_objective_sft_losses(logp_a, logp_b, len_a, len_b, signs, normalizer)
    reference = batch.get("reference_logps")
    if reference is None:
        reference = reference_logprobs(model, batch, pref, initial=cfg.reference == "initial")
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
        margins=batch.get("margins"),
    )


def panacea_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], pref: torch.Tensor, cfg: TrainSection
) -> tuple[torch.Tensor, torch.Tensor]:
    """(aggregated loss, per-objective losses [m]) of one batch at preference λ."""
    losses = objective_losses(model, batch, pref, cfg)
    return aggregate(losses, pref.to(losses.device), cfg.aggregation, mu=cfg.stch_mu), losses


@torch.no_grad()
def pair_logprobs(
    model: nn.Module, batches: list[dict[str, torch.Tensor]], lam: list[float] | None = None
) -> torch.Tensor:
    """[N, 2] summed log-probs of each pair's responses (a, b) over collated `batches`: under
    π_ref (the adapter switched off) when `lam` is None, else under the model's adapter at λ."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = []
    try:
        with adapter_disabled(model) if lam is None else preference(model, lam):
            for batch in batches:
                batch = {name: tensor.to(device) for name, tensor in batch.items()}
                logp_a, logp_b, _, _ = policy_logprobs(model, batch)
                parts.append(torch.stack([logp_a, logp_b], dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(parts)
