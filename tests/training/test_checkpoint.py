import json
import random

import numpy as np
import pytest
import torch

from orchestrator.config.sections import TrainSection
from orchestrator.errors import MoaError
from orchestrator.model.loading import load_model
from orchestrator.model.svd_lora import adapter_parameters, inject_svd_lora
from orchestrator.training.checkpoint import load_checkpoint, read_state, save_checkpoint
from orchestrator.training.trainer import MultiObjectiveTrainer

OBJECTIVES = ("helpful", "harmless")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def make_trainer(tiny_base_dir, tokenizer, encoded):
    """make_trainer(num_pairs, adapter_seed=0, **train changes): a fresh model and trainer.

    The global batch is 4 pairs × 2 micro-batches = 8, and the schedule spans 4 steps.
    """

    def make(num_pairs: int, adapter_seed: int = 0, **changes) -> MultiObjectiveTrainer:
        model = inject_svd_lora(
            load_model(str(tiny_base_dir)), len(OBJECTIVES), rank=4, alpha=32, seed=adapter_seed
        )
        base = {
            "batch_size": 4,
            "grad_accum_steps": 2,
            "max_steps": 4,
            "warmup_steps": 1,
            "learning_rate": 1e-2,
            "vertex_probability": 0.3,
        }
        cfg = TrainSection(**{**base, **changes})
        return MultiObjectiveTrainer(model, encoded[:num_pairs], tokenizer.pad_token_id, cfg)

    return make


def adapter_state(trainer: MultiObjectiveTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in adapter_parameters(trainer.model).items()}


def train_until(trainer: MultiObjectiveTrainer, step: int) -> list[float]:
    trainer.prepare()
    return [trainer.train_step().loss for _ in range(trainer.step, step)]


@pytest.mark.parametrize(
    ("num_pairs", "expected_epoch_and_position"),
    [
        (24, (0, 2)),  # 3 steps per epoch: the checkpoint is mid-epoch
        (16, (1, 0)),  # 2 steps per epoch: the checkpoint is exactly at an epoch boundary
    ],
)
def test_resume_continues_exactly(make_trainer, tmp_path, num_pairs, expected_epoch_and_position):
    straight = make_trainer(num_pairs)
    straight_losses = train_until(straight, 4)

    first = make_trainer(num_pairs)
    first_losses = train_until(first, 2)
    assert first_losses == straight_losses[:2]
    save_checkpoint(tmp_path, first)
    assert first.epoch_and_position == expected_epoch_and_position

    # A different adapter initialisation, so only the checkpoint can make the runs agree.
    resumed = make_trainer(num_pairs, adapter_seed=7)
    state = load_checkpoint(tmp_path, resumed)
    assert state["step"] == resumed.step == 2
    assert resumed.epoch_and_position == expected_epoch_and_position
    history = resumed.train(progress=False)

    assert [r.step for r in history] == [3, 4]
    assert [r.loss for r in history] == straight_losses[2:]
    final, expected = adapter_state(resumed), adapter_state(straight)
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[n], expected[n]) for n in expected)


@pytest.mark.parametrize(
    ("num_pairs", "step", "epoch", "position"),
    [(24, 0, 0, 0), (24, 7, 2, 1), (16, 2, 1, 0), (20, 5, 2, 1)],  # 3, 3, 2, 2 steps per epoch
)
def test_state_json_records_step_epoch_and_position(
    make_trainer, tmp_path, num_pairs, step, epoch, position
):
    trainer = make_trainer(num_pairs, seed=3)
    trainer.step = step  # the record depends only on the step count, not on training
    save_checkpoint(tmp_path, trainer, metrics={"loss": 0.5})
    state = json.loads((tmp_path / "state.json").read_text())
    assert state == {
        "step": step,
        "epoch": epoch,
        "position": position,
        "global_batch": 8,
        "seed": 3,
        "metrics": {"loss": 0.5},
    }
    assert read_state(tmp_path) == state
    for name in ("adapter/adapter.safetensors", "optimizer.pt", "rng.pt"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"batch_size": 2}, ["train.batch_size", "scaling.num_workers", "global batch 8", "has 4"]),
        ({"grad_accum_steps": 3}, ["train.grad_accum_steps", "global batch 8", "has 12"]),
        ({"seed": 1}, ["train.seed 0", "and 1"]),
    ],
)
def test_load_refuses_another_global_batch_or_seed(make_trainer, tmp_path, changes, names):
    save_checkpoint(tmp_path, make_trainer(24))
    other = make_trainer(24, adapter_seed=7, **changes)
    before = adapter_state(other)
    with pytest.raises(MoaError) as err:
        load_checkpoint(tmp_path, other)
    for name in names:
        assert name in str(err.value)
    assert other.step == 0
    assert all(torch.equal(before[n], t) for n, t in adapter_state(other).items())


def test_load_restores_the_random_generators(make_trainer, tmp_path):
    save_checkpoint(tmp_path, make_trainer(24))
    expected = (torch.rand(3), random.random(), np.random.rand(3))

    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    load_checkpoint(tmp_path, make_trainer(24))
    got = (torch.rand(3), random.random(), np.random.rand(3))

    assert torch.equal(got[0], expected[0])
    assert got[1] == expected[1]
    assert np.array_equal(got[2], expected[2])


def test_read_state_without_state_json_is_refused(tmp_path):
    (tmp_path / "adapter").mkdir()
    with pytest.raises(MoaError, match=r"state\.json is missing"):
        read_state(tmp_path)
