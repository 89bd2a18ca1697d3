"""`moa reward` end to end on the shared Ray instance: reward models trained on Ray Train, stopped
by a failure and resumed with `moa reward --resume` to the single-process result, measured on the
test pairs; bad inputs refused before any worker starts."""

import dataclasses
import json

import pytest
from safetensors.torch import load_file

from orchestrator.cli import main
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.schema import PairDataset
from orchestrator.data.sources import load_pairs, load_training_pairs
from orchestrator.distributed.train import FAULT_ENV
from orchestrator.errors import MoaError
from orchestrator.model.reward_model import load_reward_model
from orchestrator.recipes.reward import held_out_accuracy, run_reward
from orchestrator.training.loop import train_reward_rank
from orchestrator.training.metrics_log import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

REWARD = [
    "train.max_steps=6",
    "train.learning_rate=1e-3",
    "train.log_every=1",
    "checkpoint.every=2",
    "reward.held_out_pairs=24",
]


def model_weights(folder):
    return load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def resumed(tiny_config, tmp_path_factory):
    """A run whose worker fails before step 5 (checkpoints at 2 and 4), then `moa reward
    --resume`; and the same run uninterrupted in this process."""
    root = tmp_path_factory.mktemp("reward")
    cfg = tiny_config(root / "run", *REWARD)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAULT_ENV, "5")
        with pytest.raises(MoaError, match="moa reward --resume"):
            run_reward(cfg, progress=False)
    stopped = [m["step"] for m in read_metrics(root / "run")]
    assert main(["reward", "--resume", str(root / "run")]) == 0
    here = tiny_config(root / "here", *REWARD)
    (root / "here").mkdir()
    train_reward_rank(here, root / "here", load_training_pairs(here.data))
    return cfg, root / "run", root / "here", stopped


def test_a_resumed_run_ends_with_the_single_process_reward_model(resumed):
    _, run_dir, here, stopped = resumed
    assert stopped == [1, 2, 3, 4]
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    ray_trained = model_weights(run_dir / "reward_model")
    expected = model_weights(here / "reward_model")
    assert ray_trained.keys() == expected.keys()
    assert max((ray_trained[k] - expected[k]).abs().max().item() for k in expected) < 1e-6
    losses = [m["loss"] for m in read_metrics(run_dir)]
    assert losses == pytest.approx([m["loss"] for m in read_metrics(here)], rel=1e-6)


def test_the_test_pairs_accuracy_is_reported_per_objective(resumed):
    cfg, run_dir, _, _ = resumed
    saved = json.loads((run_dir / "accuracy.json").read_text())
    model = load_reward_model(run_dir / "reward_model")
    assert saved == held_out_accuracy(cfg, model, load_pairs(cfg.data, "test", 24))
    assert set(saved) == {"helpful", "harmless"}
    assert all(0 < a["pairs"] <= 24 and 0 <= a["accuracy"] <= 1 for a in saved.values())
    report = (run_dir / "report.md").read_text()
    for name, a in saved.items():
        assert f"| {name} | {a['pairs']} | {a['accuracy']:.3f} |" in report
    assert (run_dir / "train.json").is_file()


def test_a_stopped_run_is_not_started_again_without_resume(resumed, tiny_config, capsys):
    cfg, run_dir, _, _ = resumed
    assert main(["reward", f"model.name_or_path={cfg.model.name_or_path}",
                 f"output_dir={run_dir}"]) == 2  # fmt: skip
    assert "already holds a finished reward-model run" in capsys.readouterr().err


def test_an_objective_with_only_ties_is_refused_before_any_worker(tiny_config, tmp_path):
    drawn = AssistantTask(seed=0).preference_pairs(40, ("helpful", "harmless"))
    tied = [
        dataclasses.replace(pair, labels={**pair.labels, "harmless": "tie"}, scores=None)
        for pair in drawn
    ]
    path = tmp_path / "pairs.jsonl"
    PairDataset(drawn.objectives, tied).save_jsonl(path)
    cfg = tiny_config(
        tmp_path / "run", "data.source=jsonl", f"data.path={path}", "data.test_fraction=0.3"
    )  # eval.* play no part in a reward run: no scorer is needed on a file dataset
    with pytest.raises(MoaError, match=r"no pair that is not a tie on \['harmless'\]"):
        run_reward(cfg, progress=False)
    assert not (tmp_path / "run").exists()
