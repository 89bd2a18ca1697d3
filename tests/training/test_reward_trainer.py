"""The reward-model trainer on the tiny base: a step is the Bradley–Terry loss of its global
batch however micro-batches cut it, a checkpoint resumes it exactly, the saved models load with
`from_pretrained`, and training orders its pairs as their labels do."""

import pytest
import torch

from orchestrator.algorithms.reward_model import correct_orders, pair_rewards
from orchestrator.config.sections import TrainSection
from orchestrator.data.batching import step_indices
from orchestrator.data.encoding import collate_pairs
from orchestrator.model.reward_model import build_reward_model, load_reward_model, save_reward_model
from orchestrator.objectives.losses import bradley_terry_losses
from orchestrator.training.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.training.reward_trainer import RewardTrainer

OBJECTIVES = ["helpful", "harmless"]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def make_trainer(tiny_base_dir, tokenizer, encoded):
    def make(per_objective=False, lora_rank=None, **changes) -> RewardTrainer:
        torch.manual_seed(0)  # the heads' (and LoRA's) initialisation
        model = build_reward_model(
            str(tiny_base_dir),
            OBJECTIVES,
            per_objective,
            tokenizer.pad_token_id,
            "float32",
            lora_rank=lora_rank,
        )
        base = {"batch_size": 8, "max_steps": 4, "warmup_steps": 1, "learning_rate": 1e-3}
        cfg = TrainSection(**{**base, **changes})
        return RewardTrainer(model, encoded[:32], tokenizer.pad_token_id, cfg)

    return make


def weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def test_a_step_is_the_bradley_terry_loss_of_the_global_batch(make_trainer, encoded, tokenizer):
    trainer = make_trainer()
    result = trainer.train_step()
    fresh = make_trainer()  # the same weights as `trainer` before its step
    indices = step_indices(32, 8, trainer.cfg.seed, 0)
    batch = collate_pairs([encoded[i] for i in indices], tokenizer.pad_token_id)
    with torch.no_grad():
        rewards_a, rewards_b = pair_rewards(fresh.model, batch)
    expected = bradley_terry_losses(rewards_a, rewards_b, batch["signs"])
    assert result.objective_losses == pytest.approx(expected.tolist(), rel=1e-5)
    assert result.loss == pytest.approx(expected.sum().item(), rel=1e-5)
    right, counted = correct_orders(rewards_a, rewards_b, batch["signs"])
    assert result.accuracy == pytest.approx((right / counted).tolist())


@pytest.mark.parametrize("per_objective", [False, True])
def test_gradient_accumulation_equals_one_big_batch(make_trainer, per_objective):
    whole = make_trainer(per_objective)
    cut = make_trainer(per_objective, batch_size=4, grad_accum_steps=2)
    for _ in range(2):
        a, b = whole.train_step(), cut.train_step()
        assert a.loss == pytest.approx(b.loss, rel=1e-5)
    final, expected = weights(cut), weights(whole)
    assert max((final[n] - expected[n]).abs().max().item() for n in expected) < 1e-5


@pytest.mark.parametrize("lora_rank", [None, 2])
def test_resume_from_a_checkpoint_continues_exactly(make_trainer, tmp_path, lora_rank):
    straight = make_trainer(lora_rank=lora_rank)
    losses = [straight.train_step().loss for _ in range(4)]
    first = make_trainer(lora_rank=lora_rank)
    for _ in range(2):
        first.train_step()
    save_checkpoint(tmp_path, first)
    resumed = make_trainer(lora_rank=lora_rank, learning_rate=1e-3)
    with torch.no_grad():  # other weights, so only the checkpoint can make the runs agree
        for p in resumed.model.parameters():
            if p.requires_grad:
                p.add_(0.1)
    load_checkpoint(tmp_path, resumed)
    assert resumed.step == 2
    assert [resumed.train_step().loss for _ in range(2)] == losses[2:]
    final, expected = weights(resumed), weights(straight)
    assert all(torch.equal(final[n], expected[n]) for n in expected)


@pytest.mark.parametrize("per_objective", [False, True])
def test_saved_reward_models_load_with_from_pretrained(
    make_trainer, tmp_path, tokenizer, encoded, per_objective
):
    from transformers import AutoModelForSequenceClassification

    trainer = make_trainer(per_objective)
    trainer.train_step()
    save_reward_model(trainer.model, tokenizer, tmp_path / "rm")
    batch = collate_pairs(encoded[:4], tokenizer.pad_token_id)
    with torch.no_grad():
        before = trainer.model(batch["input_ids"], batch["attention_mask"])
        after = load_reward_model(tmp_path / "rm")(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(before, after, atol=1e-6)
    # Anyone can load them with transformers alone; the heads are named by the objectives.
    if per_objective:
        for i, name in enumerate(OBJECTIVES):
            model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm" / name)
            assert model.config.id2label == {0: name}
            with torch.no_grad():
                logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            assert torch.allclose(logits[:, 0], before[:, i], atol=1e-6)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
        assert model.config.id2label == dict(enumerate(OBJECTIVES))
        with torch.no_grad():
            logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert torch.allclose(logits, before, atol=1e-6)


def test_training_orders_its_pairs_as_their_labels(make_trainer, encoded, tokenizer):
    """The session's tiny base is too small to generalise much (held-out accuracy is measured on
    the built-in base by `moa reward jobs/reward_tiny.yaml`); it must learn its 32 training
    pairs."""
    trainer = make_trainer(max_steps=80, learning_rate=3e-3)
    batch = collate_pairs(encoded[:32], tokenizer.pad_token_id)

    def measured():
        with torch.no_grad():
            rewards_a, rewards_b = pair_rewards(trainer.model, batch)
        right, counted = correct_orders(rewards_a, rewards_b, batch["signs"])
        losses = bradley_terry_losses(rewards_a, rewards_b, batch["signs"])
        return (right / counted).tolist(), losses.sum().item()

    (before, loss_before) = measured()
    for _ in range(80):
        trainer.train_step()
    after, loss_after = measured()
    assert all(a >= 0.85 for a in after), (before, after)
    assert loss_after < loss_before / 2, (loss_before, loss_after)


def test_lora_trains_adapters_and_heads_and_saves_a_plain_model_of_low_rank_changes(
    make_trainer, tiny_base_dir, tokenizer, encoded, tmp_path
):
    from transformers import AutoModelForSequenceClassification

    trainer = make_trainer(lora_rank=2, max_steps=40, learning_rate=3e-3)
    model = trainer.model
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or ".score." in n for n in trained), sorted(trained)
    losses = [trainer.train_step().loss for _ in range(40)]
    assert sum(losses[-5:]) < sum(losses[:5]) / 2, losses
    batch = collate_pairs(encoded[:4], tokenizer.pad_token_id)
    with torch.no_grad():
        before = model(batch["input_ids"], batch["attention_mask"])
    save_reward_model(model, tokenizer, tmp_path / "rm")
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    with torch.no_grad():
        logits = saved(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(logits, before, atol=1e-5)
    # The backbone changed by a rank-2 update in every linear layer and nowhere else.
    base = AutoModelForSequenceClassification.from_pretrained(tiny_base_dir, num_labels=2)
    base_weights = dict(base.named_parameters())
    changed = 0
    for name, weight in saved.named_parameters():
        if name.startswith("score."):
            continue
        delta = weight.detach() - base_weights[name].detach()
        if weight.dim() == 2 and "proj" in name:
            assert torch.linalg.matrix_rank(delta, atol=1e-6) <= 2, name
            changed += bool(delta.abs().max() > 0)
        else:
            assert torch.equal(delta, torch.zeros_like(delta)), name
    assert changed == 14  # q, k, v, o, gate, up and down of both layers
