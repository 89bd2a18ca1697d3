import math
from dataclasses import replace

import pytest
import torch

from orchestrator.algorithms.panacea import (
    objective_losses,
    panacea_loss,
    policy_logprobs,
    reference_logprobs,
)
from orchestrator.config.sections import TrainSection
from orchestrator.data.encoding import collate_pairs
from orchestrator.errors import MoaError
from orchestrator.model.loading import load_model
from orchestrator.model.svd_lora import (
    adapter_parameters,
    freeze_anchor,
    inject_svd_lora,
    preference,
    svd_lora_layers,
)
from orchestrator.objectives import non_tie_counts
from orchestrator.training.trainer import MultiObjectiveTrainer

OBJECTIVES = ("helpful", "harmless")


def steerable(tiny_base_dir, seed=0):
    model = load_model(str(tiny_base_dir))
    return inject_svd_lora(model, len(OBJECTIVES), rank=4, alpha=32, seed=seed)


def train_config(**changes):
    base = {"batch_size": 8, "max_steps": 4, "warmup_steps": 0, "learning_rate": 1e-2}
    return TrainSection(**{**base, **changes})


def test_training_makes_the_model_steerable(tiny_base_dir, tokenizer, encoded):
    model = steerable(tiny_base_dir)
    base_weights = {n: p.clone() for n, p in model.named_parameters() if "lora_" not in n}
    batch = collate_pairs(encoded[:4], tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    with torch.no_grad(), preference(model, [1.0, 0.0]):
        before_e1 = model(**inputs).logits
    with torch.no_grad(), preference(model, [0.0, 1.0]):
        before_e2 = model(**inputs).logits
    assert torch.equal(before_e1, before_e2)  # zero init: λ has no effect yet

    # At initialisation σ = s = 0: the gradient flows into s (and σ), not yet into U and V.
    loss, _ = panacea_loss(model, batch, torch.tensor([0.3, 0.7]), train_config())
    loss.backward()
    scales = [p.grad for n, p in adapter_parameters(model).items() if n.endswith("lora_scale")]
    assert all(g is not None for g in scales)
    assert sum(g.abs().sum() for g in scales) > 0
    model.zero_grad(set_to_none=True)

    MultiObjectiveTrainer(model, encoded, tokenizer.pad_token_id, train_config()).train(
        progress=False
    )
    with torch.no_grad(), preference(model, [1.0, 0.0]):
        after_e1 = model(**inputs).logits
    with torch.no_grad(), preference(model, [0.0, 1.0]):
        after_e2 = model(**inputs).logits
    assert (after_e1 - after_e2).abs().max() > 1e-5  # float noise is ~1e-7
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base_weights[name]), f"{name} changed: base must stay frozen"


def test_precomputed_reference_equals_reference_on_the_fly(tiny_base_dir, tokenizer, encoded):
    model = steerable(tiny_base_dir)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(0.05 * torch.randn_like(p))
    batch = collate_pairs(encoded[:6], tokenizer.pad_token_id)
    pref = torch.tensor([0.4, 0.6])
    on_the_fly, losses = panacea_loss(model, batch, pref, train_config())
    batch["reference_logps"] = reference_logprobs(model, batch)
    precomputed, losses_pre = panacea_loss(model, batch, pref, train_config())
    assert torch.allclose(on_the_fly, precomputed, atol=1e-6)
    assert torch.allclose(losses, losses_pre, atol=1e-6)
    # With a non-zero adapter the policy differs from the reference, so DPO losses move off log 2.
    assert not torch.allclose(losses, torch.full_like(losses, 0.6931), atol=1e-4)


def test_zero_adapter_gives_dpo_loss_log2_and_ls_aggregates_by_lambda(
    tiny_base_dir, tokenizer, encoded
):
    model = steerable(tiny_base_dir)
    batch = collate_pairs(encoded[:8], tokenizer.pad_token_id)
    pref = torch.tensor([0.25, 0.75])
    plain_dpo = train_config(nll_weight=0.0)
    loss, losses = panacea_loss(model, batch, pref, plain_dpo)
    # π_θ = π_ref at init: h = 0 and every objective's DPO loss is −log σ(0) = log 2.
    assert torch.allclose(losses, torch.full((2,), torch.log(torch.tensor(2.0)).item()), atol=1e-5)
    assert loss.item() == pytest.approx((pref * losses.detach()).sum().item(), abs=1e-6)
    tche, _ = panacea_loss(model, batch, pref, train_config(aggregation="tche", nll_weight=0.0))
    assert tche.item() == pytest.approx(0.75 * losses[1].item(), abs=1e-6)


def test_nll_term_adds_each_objectives_chosen_response_nll(tiny_base_dir, tokenizer, encoded):
    model = steerable(tiny_base_dir)
    batch = collate_pairs(encoded[:8], tokenizer.pad_token_id)
    _, losses = panacea_loss(model, batch, torch.tensor([0.5, 0.5]), train_config(nll_weight=0.2))
    with torch.no_grad(), preference(model, [0.5, 0.5]):
        logp_a, logp_b, len_a, len_b = policy_logprobs(model, batch)
    for i in range(2):
        signs = batch["signs"][:, i]
        chosen_nll = [
            -(logp_a[row] / len_a[row]) if sign > 0 else -(logp_b[row] / len_b[row])
            for row, sign in enumerate(signs.tolist())
            if sign != 0
        ]
        expected = torch.log(torch.tensor(2.0)) + 0.2 * torch.stack(chosen_nll).mean()
        assert losses[i].item() == pytest.approx(expected.item(), abs=1e-5)


def test_same_seed_same_adapter_and_different_seed_differs(tiny_base_dir, tokenizer, encoded):
    def run(seed):
        model = steerable(tiny_base_dir)
        MultiObjectiveTrainer(
            model, encoded, tokenizer.pad_token_id, train_config(seed=seed)
        ).train(progress=False)
        return {n: p.detach().clone() for n, p in adapter_parameters(model).items()}

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


@pytest.mark.parametrize("aggregation", ["ls", "tche", "stch"])
@pytest.mark.parametrize("loss", ["dpo", "sft"])
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_gradient_accumulation_equals_one_big_batch(
    tiny_base_dir, tokenizer, encoded, aggregation, loss
):
    """The step's loss and gradient do not depend on how its global batch is cut up, also with
    ties (per-micro-batch means would differ) and with the non-linear Tchebycheff methods."""
    assert any(s == 0 for p in encoded[:16] for s in p.signs)

    def first_step(batch_size, accumulation):
        model = steerable(tiny_base_dir)
        with torch.no_grad():  # a non-zero adapter, so Tche's arg max is not a tie at log 2
            generator = torch.Generator().manual_seed(1)
            for p in adapter_parameters(model).values():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        cfg = train_config(
            batch_size=batch_size,
            grad_accum_steps=accumulation,
            aggregation=aggregation,
            loss=loss,
            seed=2,  # step 0 draws λ ≈ (0.61, 0.39): not a vertex, where Tche would be linear
        )
        trainer = MultiObjectiveTrainer(model, encoded, tokenizer.pad_token_id, cfg)
        params = adapter_parameters(model)
        grads = {}
        trainer.optimizer.step = lambda: grads.update(
            {n: p.grad.clone() for n, p in params.items()}
        )
        return trainer.train_step(), grads

    big, big_grads = first_step(16, 1)
    accumulated, accumulated_grads = first_step(4, 4)
    assert big.loss == pytest.approx(accumulated.loss, abs=1e-6)
    assert big.objective_losses == pytest.approx(accumulated.objective_losses, abs=1e-6)
    scale = max(g.abs().max() for g in big_grads.values())
    assert scale > 0
    for name, grad in big_grads.items():
        assert torch.allclose(grad, accumulated_grads[name], atol=1e-5 * scale), name


def test_training_leaves_no_preference_behind_and_restores_the_mode(
    tiny_base_dir, tokenizer, encoded
):
    model = steerable(tiny_base_dir)
    model.train()
    MultiObjectiveTrainer(model, encoded, tokenizer.pad_token_id, train_config(max_steps=1)).train(
        progress=False
    )
    assert model.training
    assert all(layer.preference is None for _, layer in svd_lora_layers(model))


def test_each_vertex_learns_its_own_objective(tiny_base_dir, tokenizer, encoded):
    """After training at the vertices, the model at e_i prefers objective i's chosen responses
    more than the model at e_j does: the λ order and the loss signs line up."""
    model = steerable(tiny_base_dir)
    cfg = train_config(max_steps=8, vertex_probability=1.0, learning_rate=2e-2)
    MultiObjectiveTrainer(model, encoded, tokenizer.pad_token_id, cfg).train(progress=False)
    batch = collate_pairs(encoded[:32], tokenizer.pad_token_id)
    reference = reference_logprobs(model, batch)
    margins = {}
    for vertex in ([1.0, 0.0], [0.0, 1.0]):
        with torch.no_grad(), preference(model, vertex):
            logp_a, logp_b, _, _ = policy_logprobs(model, batch)
        h = (logp_a - reference[:, 0]) - (logp_b - reference[:, 1])  # implicit reward a over b
        margins[tuple(vertex)] = (batch["signs"] * h.unsqueeze(-1)).mean(dim=0)  # per objective
    assert margins[(1.0, 0.0)][0] > margins[(0.0, 1.0)][0]  # helpful is learnt at e_helpful
    assert margins[(0.0, 1.0)][1] > margins[(1.0, 0.0)][1]  # harmless at e_harmless


def test_sft_loss_trains_the_preferred_responses(tiny_base_dir, tokenizer, encoded):
    model = steerable(tiny_base_dir)
    cfg = train_config(loss="sft", max_steps=3)
    batch = collate_pairs(encoded[:8], tokenizer.pad_token_id)
    pref = torch.tensor([0.5, 0.5])
    before, _ = panacea_loss(model, batch, pref, cfg)
    trainer = MultiObjectiveTrainer(model, encoded[:8], tokenizer.pad_token_id, cfg)
    history = trainer.train(progress=False)
    after, _ = panacea_loss(model, batch, pref, cfg)
    assert len(history) == 3 and history[-1].step == 3
    assert after.item() < before.item()


def test_step_results_report_lambda_and_throughput(tiny_base_dir, tokenizer, encoded):
    model = steerable(tiny_base_dir)
    trainer = MultiObjectiveTrainer(
        model, encoded, tokenizer.pad_token_id, train_config(max_steps=2)
    )
    history = trainer.train(progress=False)
    for result in history:  # step t is reported once done; it trained at the λ drawn for t − 1
        assert result.preference == trainer.sampler.sample(result.step - 1).tolist()
        assert sum(result.preference) == pytest.approx(1.0)
        assert result.tokens > 0 and result.as_dict()["tokens_per_s"] > 0
        assert len(result.objective_losses) == 2


def test_initial_adapter_anchor_is_the_starting_policy_frozen(
    tiny_base_dir, tokenizer, encoded, perturb, tmp_path
):
    """train.reference: initial anchors DPO on the adapter training started from, at the step's
    λ: a separate model loaded with that adapter gives the same log-probs, the first step's DPO
    losses are exactly log 2 (policy = anchor), and training moves the policy, not the anchor."""
    from orchestrator.model.adapter_io import load_adapter, save_adapter

    start = steerable(tiny_base_dir)
    perturb(start, std=0.05)
    save_adapter(start, tmp_path / "start")
    copy = load_adapter(load_model(str(tiny_base_dir)), tmp_path / "start")

    cfg = train_config(reference="initial", nll_weight=0.0, max_steps=3)
    model = steerable(tiny_base_dir)
    load_adapter(model, tmp_path / "start")
    trainer = MultiObjectiveTrainer(model, encoded, tokenizer.pad_token_id, cfg)
    batch = collate_pairs(encoded[:6], tokenizer.pad_token_id)
    pref = torch.tensor([0.3, 0.7])

    def copy_logprobs():
        with torch.no_grad(), preference(copy, pref):
            logp_a, logp_b, _, _ = policy_logprobs(copy, batch)
        return torch.stack([logp_a, logp_b], dim=-1)

    anchor = reference_logprobs(model, batch, pref, initial=True)
    assert torch.allclose(anchor, copy_logprobs(), atol=1e-5)
    assert not torch.allclose(anchor, reference_logprobs(model, batch), atol=1e-3)  # ≠ base

    first = trainer.train_step()
    assert first.objective_losses == pytest.approx([0.693147] * 2, abs=1e-5)
    trainer.train(progress=False)
    assert torch.allclose(reference_logprobs(model, batch, pref, initial=True), anchor, atol=1e-5)
    trained, started = adapter_parameters(model), adapter_parameters(copy)
    moved = sum((trained[name] - started[name]).abs().sum() for name in trained)
    assert moved > 1e-3


def test_a_fixed_preference_trains_every_step_at_it(tiny_base_dir, tokenizer, encoded):
    trainer = MultiObjectiveTrainer(
        steerable(tiny_base_dir),
        encoded,
        tokenizer.pad_token_id,
        train_config(max_steps=3),
        preference=[0.3, 0.7],
    )
    history = trainer.train(progress=False)
    assert [r.preference for r in history] == [pytest.approx([0.3, 0.7])] * 3
    for r in history:  # LS at the fixed λ
        assert r.loss == pytest.approx(0.3 * r.objective_losses[0] + 0.7 * r.objective_losses[1])


def test_one_objective_trains_its_loss_alone(tiny_base_dir, tokenizer, encoded):
    """An expert of objective 1: the step's loss is that objective's, and the update equals
    the one plain DPO on objective 1's labels alone makes."""
    cfg = train_config(max_steps=2, aggregation="tche")  # the aggregation is not used

    def trained(objective, pairs):
        model = steerable(tiny_base_dir)
        trainer = MultiObjectiveTrainer(
            model, pairs, tokenizer.pad_token_id, cfg, preference=[0.0, 1.0], objective=objective
        )
        history = trainer.train(progress=False)
        return history, {n: p.detach().clone() for n, p in adapter_parameters(model).items()}

    history, expert = trained(1, encoded)
    assert all(r.loss == pytest.approx(r.objective_losses[1]) for r in history)
    # The same objective's labels in both slots and LS at e_2: the same update.
    harmless_only = [replace(p, signs=[p.signs[1], p.signs[1]]) for p in encoded]
    _, reference = trained(None, harmless_only)
    assert all(torch.allclose(expert[n], reference[n], atol=1e-6) for n in expert)


def test_margins_enter_the_trained_objectives_logit(tiny_base_dir, tokenizer, encoded):
    cfg = train_config(nll_weight=0.0, max_steps=1)
    pairs = encoded[: cfg.batch_size]
    margins = torch.zeros(len(pairs), 2)
    margins[:, 1] = 0.5
    trainer = MultiObjectiveTrainer(
        steerable(tiny_base_dir),
        pairs,
        tokenizer.pad_token_id,
        cfg,
        preference=[0.0, 1.0],
        objective=1,
        margins=margins,
    )
    first = trainer.train_step()
    # At the first step the policy is the reference (h = 0): −log σ(−0.5) and −log σ(0).
    assert first.objective_losses[1] == pytest.approx(-math.log(1 / (1 + math.exp(0.5))), abs=1e-5)
    assert first.objective_losses[0] == pytest.approx(math.log(2), abs=1e-5)
    with pytest.raises(MoaError, match=r"margins must have shape \[8, 2\]"):
        MultiObjectiveTrainer(
            steerable(tiny_base_dir), pairs, tokenizer.pad_token_id, cfg, margins=margins[:3]
        )


def test_an_initial_anchor_at_a_fixed_preference_is_precomputed(
    tiny_base_dir, tokenizer, encoded, perturb
):
    model = steerable(tiny_base_dir)
    perturb(model, std=0.05)
    cfg = train_config(reference="initial")
    pairs = encoded[:12]
    trainer = MultiObjectiveTrainer(
        model, pairs, tokenizer.pad_token_id, cfg, preference=[0.4, 0.6]
    )
    trainer.prepare()
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    expected = reference_logprobs(model, batch, torch.tensor([0.4, 0.6]), initial=True)
    assert trainer.reference is not None
    assert torch.allclose(trainer.reference, expected, atol=1e-5)
    assert not torch.allclose(trainer.reference, reference_logprobs(model, batch), atol=1e-3)


def agreeing(encoded):
    """The pairs with labels that agree on both objectives (as SIPO's new pairs' do)."""
    return [replace(p, signs=[1, 1]) for p in encoded]


@pytest.mark.parametrize("reference", ["base", "initial"])
def test_a_lambda_per_pair_shared_by_every_pair_is_that_fixed_lambda(
    tiny_base_dir, tokenizer, encoded, reference
):
    pairs, lam = agreeing(encoded[:32]), [0.3, 0.7]
    cfg = train_config(reference=reference)
    results = []
    for kwargs in ({"preference": lam}, {"preferences": torch.tensor([lam] * len(pairs))}):
        model = steerable(tiny_base_dir, seed=1)
        with torch.no_grad():
            for p in adapter_parameters(model).values():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
        trainer = MultiObjectiveTrainer(model, pairs, tokenizer.pad_token_id, cfg, **kwargs)
        history = trainer.train(progress=False)
        results.append(([r.loss for r in history], adapter_parameters(model)))
    (fixed_losses, fixed), (own_losses, own) = results
    assert own_losses == pytest.approx(fixed_losses, abs=1e-6)
    # A λ per row and one broadcast λ take different kernels: fp32 rounding, ~1e-6 after the steps.
    for name, tensor in fixed.items():
        torch.testing.assert_close(own[name], tensor, rtol=0, atol=1e-5)


def test_each_pair_runs_at_its_own_lambda(tiny_base_dir, tokenizer, encoded):
    """A batch of pairs at two λ: its losses are the sums of each half's at its λ (the
    normaliser is the whole batch's), for the policy and the initial-adapter anchor."""
    model = steerable(tiny_base_dir)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    freeze_anchor(model)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    cfg, pad = train_config(reference="initial"), tokenizer.pad_token_id
    pairs = agreeing(encoded[:8])
    first, second = torch.tensor([0.2, 0.8]), torch.tensor([0.9, 0.1])
    whole = collate_pairs(pairs, pad)
    whole["preferences"] = torch.stack([first] * 4 + [second] * 4)
    counts = non_tie_counts(whole["signs"])
    with torch.no_grad():
        mixed = objective_losses(model, whole, (first + second) / 2, cfg, counts)
        halves = objective_losses(model, collate_pairs(pairs[:4], pad), first, cfg, counts)
        halves += objective_losses(model, collate_pairs(pairs[4:], pad), second, cfg, counts)
        at_mean = objective_losses(model, collate_pairs(pairs, pad), (first + second) / 2, cfg)
    torch.testing.assert_close(mixed, halves, rtol=0, atol=1e-5)
    assert (mixed - at_mean).abs().max() > 1e-3  # not the same as every pair at the mean λ


def test_a_lambda_per_pair_needs_labels_that_agree(tiny_base_dir, tokenizer, encoded):
    mixed = [p for p in encoded if len(set(p.signs)) > 1][:8]
    with pytest.raises(MoaError, match="labels agree on every objective"):
        MultiObjectiveTrainer(
            steerable(tiny_base_dir),
            mixed,
            tokenizer.pad_token_id,
            train_config(),
            preferences=torch.tensor([[0.5, 0.5]] * 8),
        )


@pytest.mark.parametrize("changes", [{}, {"aggregation": "tche", "batch_size": 4}])
def test_packed_batches_train_the_adapter_padded_batches_train(tiny_base_dir, tokenizer, changes):
    """Four steps on packed pairs (the default) and on padded rows give the same adapter (and
    with micro-batches cut from the step, the same Tchebycheff weighting)."""
    from orchestrator.data.assistant_task import AssistantTask
    from orchestrator.data.encoding import encode_pairs

    pairs = AssistantTask(seed=0).preference_pairs(64, OBJECTIVES)
    encoded = encode_pairs(tokenizer, pairs, max_prompt_tokens=32, max_response_tokens=48)
    adapters = []
    for packing in (True, False):
        model = steerable(tiny_base_dir)
        cfg = train_config(packing=packing, learning_rate=1e-3, **changes)
        MultiObjectiveTrainer(model, encoded, tokenizer.pad_token_id, cfg).train(progress=False)
        adapters.append({n: p.detach().clone() for n, p in adapter_parameters(model).items()})
    packed, padded = adapters
    assert packed.keys() == padded.keys()
    moved = max((packed[n] - steerable(tiny_base_dir).state_dict()[n]).abs().max() for n in packed)
    assert moved > 1e-3  # training moved the adapter (Adam: by about lr per step)
    for name in packed:
        torch.testing.assert_close(packed[name], padded[name], atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients_and_adapter(tiny_base_dir, encoded):
    """Checkpointed decoder layers run again in the backward pass (at the forward's λ, sampled
    per step) and give the gradients, and after two steps the adapter, of keeping every
    activation."""
    results = []
    for checkpointing in (False, True):
        model = steerable(tiny_base_dir, seed=3)
        generator = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for param in adapter_parameters(model).values():
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
        mlp_runs = []
        layer = next(
            module
            for _, module in model.named_modules()
            if module.__class__.__name__.endswith("MLP")
        )
        layer.register_forward_pre_hook(lambda *_, runs=mlp_runs: runs.append(1))
        cfg = train_config(gradient_checkpointing=checkpointing, batch_size=4, max_steps=2)
        trainer = MultiObjectiveTrainer(model, encoded[:16], 0, cfg)
        trainer.prepare()
        trainer.train_step()  # the first use also checks the output head (model/forward.py)
        mlp_runs.clear()
        trainer.train_step()
        runs = len(mlp_runs)
        results.append(
            (runs, {n: p.detach().clone() for n, p in adapter_parameters(model).items()})
        )
    (plain_runs, plain), (checkpointed_runs, checkpointed) = results
    assert checkpointed_runs == 2 * plain_runs  # each micro-batch's layers ran again
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)
