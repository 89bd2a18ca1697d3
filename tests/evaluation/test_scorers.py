"""Each objective's scorer: ground truth, a reward model's output (sign, offset, scale) or the
model's implicit reward, each column equal to the scorer computed on its own; and a bad scorer
config refused before any worker starts, with the field named."""

import numpy as np
import pytest
import yaml

import orchestrator.distributed.generation as generation
import orchestrator.distributed.train as distributed_train
from orchestrator.cli import main
from orchestrator.config.sections import RewardModelScorer
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.evaluation.scorers import Scorers
from orchestrator.model.build import build_model
from orchestrator.model.loading import load_tokenizer
from orchestrator.model.reward_model import REWARD_MODEL, build_reward_model, save_reward_model
from orchestrator.rewards.implicit import implicit_rewards
from orchestrator.rewards.reward_models import Classifier


@pytest.fixture(scope="module")
def reward_folder(tiny_base_dir, tmp_path_factory):
    """A `moa reward`-style folder: one backbone, heads helpful and harmless."""
    tokenizer = load_tokenizer(str(tiny_base_dir))
    model = build_reward_model(
        str(tiny_base_dir), ["helpful", "harmless"], False, tokenizer.pad_token_id, "float32"
    )
    out = tmp_path_factory.mktemp("rm") / REWARD_MODEL
    save_reward_model(model, tokenizer, out)
    return str(out)


def test_each_column_is_its_scorer_computed_alone(tiny_config, tmp_path, reward_folder):
    cfg = tiny_config(tmp_path / "run", "data.objectives=[helpful, harmless, concise]")
    tokenizer, model = build_model(cfg)
    task = AssistantTask()
    prompts = task.prompts("test")[:3]
    responses = ["Use a whetstone.", "I can't help with that.", "First, gather dry wood."]
    cost = RewardModelScorer(model=reward_folder, head="harmless", sign=-1, offset=0.5, scale=2)
    scorers = {
        "helpful": RewardModelScorer(model=reward_folder, head=0),
        "harmless": cost,
        "concise": "ground_truth",
    }
    scores = Scorers(scorers, policy=(model, tokenizer))(prompts, responses)
    raw = Classifier(reward_folder)(prompts, responses)
    expected = np.stack(
        [
            raw[:, 0],
            -(raw[:, 1] - 0.5) / 2,
            task.score_batch(prompts, responses, ["concise"])[:, 0],
        ],
        axis=-1,
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-6)

    implicit = Scorers(
        {"helpful": "implicit", "harmless": "implicit", "concise": "implicit"},
        policy=(model, tokenizer),
        implicit_beta=0.2,
    )(prompts, responses)
    alone = implicit_rewards(model, tokenizer, prompts, responses, beta=0.2)
    np.testing.assert_allclose(implicit, alone, rtol=1e-6)


@pytest.fixture
def config_file(tmp_path, tiny_base_dir):
    path = tmp_path / "run.yaml"
    config = {
        "model": {"name_or_path": str(tiny_base_dir)},
        "data": {"num_pairs": 40},
        "train": {"batch_size": 4, "max_steps": 2},
        "output_dir": str(tmp_path / "run"),
    }
    path.write_text(yaml.safe_dump(config))
    return path


def refuse_workers(*args, **kwargs):
    raise AssertionError("a worker was started")


@pytest.mark.parametrize(
    ("scorers", "names"),
    [
        ("{funny: implicit}", ["eval.scorers names ['funny']", "data.objectives"]),
        ("{helpful: {model: /no/such/model}}", ["eval.scorers.helpful.model: could not load"]),
        ("{helpful: {model: RM, head: 2}}", ["eval.scorers.helpful.head: 2 is out of range"]),
        ("{helpful: {model: RM}}", ["eval.scorers.helpful.head", "has 2 outputs"]),
        ("{helpful: {model: RM, head: concise}}", ["eval.scorers.helpful.head", "no output"]),
        ("{helpful: {model: RM, sign: 2}}", ["eval.scorers.helpful"]),
        ("{helpful: implicit}", ["eval.reference_point is needed"]),
    ],
)
def test_a_bad_scorer_is_refused_before_any_worker(
    capsys, monkeypatch, config_file, reward_folder, scorers, names
):
    monkeypatch.setattr(distributed_train, "TorchTrainer", refuse_workers)
    monkeypatch.setattr(generation, "GenerationPool", refuse_workers)
    reference = [] if "reference_point" in names[0] else ["eval.reference_point=[0, 0]"]
    overrides = [f"eval.scorers={scorers.replace('RM', reward_folder)}", *reference]
    assert main(["train", str(config_file), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moa train: error: ") and err.count("\n") == 1
    for name in names:
        assert name in err, err


def test_a_file_dataset_needs_a_scorer_per_objective(capsys, config_file, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    AssistantTask().preference_pairs(20, ("helpful", "harmless")).save_jsonl(pairs)
    args = ["train", str(config_file), "data.source=jsonl", f"data.path={pairs}"]
    assert main([*args, "eval.scorers={helpful: implicit}", "eval.reference_point=[0, 0]"]) == 2
    err = capsys.readouterr().err
    assert "objective 'harmless' has no scorer (eval.scorers.harmless)" in err
    assert "or set eval.enabled: false" in err
    both = "eval.scorers={helpful: implicit, harmless: ground_truth}"
    assert main([*args, both, "eval.reference_point=[0, 0]"]) == 2
    assert "eval.scorers.harmless: ground_truth needs the built-in task" in capsys.readouterr().err


def test_a_front_needs_held_out_prompts(capsys, config_file, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    AssistantTask(seed=4).preference_pairs(48, ("helpful", "harmless")).save_jsonl(pairs)
    args = ["train", str(config_file), "data.source=jsonl", f"data.path={pairs}"]
    args += ["eval.scorers={helpful: implicit, harmless: implicit}", "eval.reference_point=[0, 0]"]
    assert main([*args, "eval.every=1"]) == 2  # 44 prompts: a validation fraction of 0.1 has none
    err = capsys.readouterr().err
    assert "no prompt of the dataset falls in its validation split" in err
    assert "data.validation_fraction = 0.1" in err
