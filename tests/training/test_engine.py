import itertools

import pytest
import torch
import torch.distributed as dist
from torch import nn

from orchestrator.config.sections import DeepSpeedSection, TrainSection
from orchestrator.model.svd_lora import adapter_parameters, inject_svd_lora, preference
from orchestrator.training.engine import LocalEngine, build_engine, deepspeed_config


def train_cfg(**changes) -> TrainSection:
    base = {"learning_rate": 0.1, "warmup_steps": 4, "max_steps": 10, "max_grad_norm": None}
    return TrainSection(**{**base, **changes})


# --- deepspeed_config ---------------------------------------------------------------------------


def test_deepspeed_batch_sizes_clipping_and_stage():
    cfg = train_cfg(batch_size=3, grad_accum_steps=5, max_grad_norm=0.7)
    ds = deepspeed_config(cfg, DeepSpeedSection(zero_stage=3), world_size=4)
    assert ds["train_micro_batch_size_per_gpu"] == 3
    assert ds["gradient_accumulation_steps"] == 5
    assert ds["train_batch_size"] == 3 * 5 * 4
    assert ds["gradient_clipping"] == 0.7
    assert ds["zero_optimization"] == {"stage": 3}
    assert ds["bf16"] == {"enabled": False}


def test_deepspeed_without_max_grad_norm_does_not_clip():
    ds = deepspeed_config(train_cfg(max_grad_norm=None), DeepSpeedSection(), world_size=1)
    assert ds["gradient_clipping"] == 0.0
    assert ds["zero_optimization"] == {"stage": 2}


@pytest.mark.parametrize(
    ("section", "expected_zero"),
    [
        (
            DeepSpeedSection(offload_optimizer=True),
            {"stage": 2, "offload_optimizer": {"device": "cpu"}},
        ),
        (
            DeepSpeedSection(zero_stage=3, offload_params=True),
            {"stage": 3, "offload_param": {"device": "cpu"}},
        ),
        (
            DeepSpeedSection(zero_stage=3, offload_optimizer=True, offload_params=True),
            {
                "stage": 3,
                "offload_optimizer": {"device": "cpu"},
                "offload_param": {"device": "cpu"},
            },
        ),
    ],
)
def test_deepspeed_offload_blocks_only_when_asked(section, expected_zero):
    assert (
        deepspeed_config(train_cfg(), section, world_size=2)["zero_optimization"] == expected_zero
    )


def test_deepspeed_bf16_flag():
    ds = deepspeed_config(train_cfg(), DeepSpeedSection(bf16=True), world_size=1)
    assert ds["bf16"] == {"enabled": True}


def test_deepspeed_passthrough_merges_recursively_and_overrides_top_level_keys():
    section = DeepSpeedSection(
        zero_stage=3,
        offload_optimizer=True,
        config={
            "zero_optimization": {"reduce_bucket_size": 123, "offload_optimizer": {"pin": True}},
            "steps_per_print": 5,
            "bf16": {"enabled": True},
            "new_key": [1, 2],
        },
    )
    ds = deepspeed_config(train_cfg(batch_size=2), section, world_size=2)
    assert ds["zero_optimization"] == {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin": True},
        "reduce_bucket_size": 123,
    }
    assert ds["steps_per_print"] == 5
    assert ds["bf16"] == {"enabled": True}
    assert ds["new_key"] == [1, 2]
    assert ds["train_batch_size"] == 4  # untouched keys keep the generated values
    assert section.config["zero_optimization"] == {  # the section's own dict is not mutated
        "reduce_bucket_size": 123,
        "offload_optimizer": {"pin": True},
    }


# --- LocalEngine.step ---------------------------------------------------------------------------


class Toy(nn.Module):
    """One adapter tensor; the loss (w · c).sum() has gradient exactly c."""

    def __init__(self):
        super().__init__()
        self.lora_w = nn.Parameter(torch.tensor([1.0, -2.0]))


def step_with_gradient(engine: LocalEngine, gradient) -> tuple[float, torch.Tensor]:
    """(returned learning rate, gradient the optimizer saw) of one step on gradient c."""
    seen = []
    hook = engine.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: seen.append(engine.parameters[0].grad.clone())
    )
    try:
        engine.backward((engine.model.lora_w * torch.tensor(gradient)).sum(), last=True)
        learning_rate = engine.step()
    finally:
        hook.remove()
    return learning_rate, seen[0]


def test_build_engine_without_a_process_group_is_local():
    assert not dist.is_initialized()
    for strategy in ("ddp", "deepspeed"):
        engine = build_engine(Toy(), train_cfg(), strategy, DeepSpeedSection())
        assert type(engine) is LocalEngine
        assert (engine.rank, engine.world_size) == (0, 1)


@pytest.mark.parametrize(
    ("max_grad_norm", "expected"),
    [(1.0, [0.6, 0.8]), (10.0, [3.0, 4.0]), (None, [3.0, 4.0])],
)
def test_step_clips_to_max_grad_norm(max_grad_norm, expected):
    engine = LocalEngine(Toy(), train_cfg(max_grad_norm=max_grad_norm))
    _, seen = step_with_gradient(engine, [3.0, 4.0])  # norm 5
    assert seen.tolist() == pytest.approx(expected, rel=1e-6)


def test_step_returns_the_warmup_rate_it_used_advances_the_schedule_and_zeroes_grads():
    engine = LocalEngine(Toy(), train_cfg(learning_rate=0.1, warmup_steps=4, max_steps=10))
    before = engine.model.lora_w.detach().clone()
    learning_rate, _ = step_with_gradient(engine, [3.0, -4.0])
    # Step 0 of a 4-step warm-up: (0 + 1) / 4 of the peak.
    assert learning_rate == pytest.approx(0.025)
    # AdamW's first update (no weight decay) is lr · sign(g): it used the rate it returned.
    delta = engine.model.lora_w.detach() - before
    assert delta.tolist() == pytest.approx([-0.025, 0.025], rel=1e-6)
    assert engine.parameters[0].grad is None
    assert engine.scheduler.last_epoch == 1
    assert engine.scheduler.get_last_lr()[0] == pytest.approx(0.05)


def test_step_learning_rates_follow_warmup_then_cosine():
    engine = LocalEngine(Toy(), train_cfg(learning_rate=0.1, warmup_steps=4, max_steps=10))
    rates = [step_with_gradient(engine, [1.0, 1.0])[0] for _ in range(12)]
    # Linear rise over 4 steps, then cosine from 1 to 0.1 over steps 4..10, then flat at 0.1:
    # step 7 is halfway, where cos(π/2) = 0 gives 0.1 + 0.9 · 0.5 = 0.55 of the peak.
    assert rates[:5] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert rates[7] == pytest.approx(0.055)
    assert rates[10:] == pytest.approx([0.01, 0.01])
    assert all(a > b for a, b in itertools.pairwise(rates[4:11]))


# --- LocalEngine.save / load --------------------------------------------------------------------


def steerable_toy(adapter_seed: int) -> nn.Module:
    torch.manual_seed(0)  # the same frozen base every time
    base = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    return inject_svd_lora(base, num_objectives=2, rank=2, alpha=4.0, seed=adapter_seed)


def train_steps(engine: LocalEngine, steps: int, start: int = 0) -> list[float]:
    """The losses of steps start, start + 1, …, each on a batch and λ of its own."""
    losses = []
    for step in range(start, start + steps):
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(5, 6, generator=generator)
        lam = torch.rand(2, generator=generator)
        with preference(engine.model, lam / lam.sum()):
            loss = engine.module(x).pow(2).mean()
        engine.backward(loss, last=True)
        engine.step()
        losses.append(loss.item())
    return losses


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in adapter_parameters(model).items()}


def test_save_load_round_trip_restores_adapter_optimizer_and_schedule(tmp_path):
    cfg = train_cfg(max_grad_norm=1.0, weight_decay=0.01)
    engine = LocalEngine(steerable_toy(adapter_seed=0), cfg)
    train_steps(engine, 3)
    engine.save(tmp_path)

    fresh = LocalEngine(steerable_toy(adapter_seed=1), cfg)
    saved = adapter_state(engine.model)
    assert any(not torch.equal(saved[n], t) for n, t in adapter_state(fresh.model).items())
    fresh.load(tmp_path)

    loaded = adapter_state(fresh.model)
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[n], loaded[n]) for n in saved)
    for mine, theirs in zip(engine.parameters, fresh.parameters, strict=True):
        a, b = engine.optimizer.state[mine], fresh.optimizer.state[theirs]
        assert float(a["step"]) == float(b["step"]) == 3.0
        assert torch.equal(a["exp_avg"], b["exp_avg"])
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert fresh.scheduler.last_epoch == engine.scheduler.last_epoch == 3
    assert fresh.scheduler.get_last_lr() == engine.scheduler.get_last_lr()

    # The restored engine takes exactly the step the original takes.
    train_steps(engine, 2, start=3)
    train_steps(fresh, 2, start=3)
    after = adapter_state(engine.model)
    assert all(torch.equal(after[n], t) for n, t in adapter_state(fresh.model).items())


# --- DeepSpeedEngine with the optimizer offloaded -----------------------------------------------


@pytest.fixture
def one_rank_group(monkeypatch):
    """A gloo group of this process alone, as Ray Train gives the worker of a one-worker run."""
    monkeypatch.setenv("LOCAL_RANK", "0")  # DeepSpeed insists on it; Ray Train sets it
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.slow
def test_zero2_with_the_optimizer_offloaded_trains_like_one_process_and_resumes(
    one_rank_group, tmp_path
):
    cfg = train_cfg(max_grad_norm=1.0, weight_decay=0.01)
    section = DeepSpeedSection(zero_stage=2, offload_optimizer=True)
    reference = LocalEngine(steerable_toy(adapter_seed=0), cfg)
    expected_losses = train_steps(reference, 3)

    engine = build_engine(steerable_toy(adapter_seed=0), cfg, "deepspeed", section)
    losses = train_steps(engine, 2)
    engine.save(tmp_path)
    losses += train_steps(engine, 1, start=2)
    # torch's AdamW steps on DeepSpeed's CPU master copy: the same arithmetic (measured: equal).
    assert losses == pytest.approx(expected_losses, rel=1e-7)
    torch.testing.assert_close(
        adapter_state(engine.model), adapter_state(reference.model), rtol=0, atol=1e-7
    )

    restored = build_engine(steerable_toy(adapter_seed=1), cfg, "deepspeed", section)
    restored.load(tmp_path)
    assert train_steps(restored, 1, start=2) == losses[2:]
    torch.testing.assert_close(
        adapter_state(restored.model), adapter_state(engine.model), rtol=0, atol=1e-7
    )
