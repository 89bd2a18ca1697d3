"""`moa train`'s recipe on a pairs file: what its run folder holds, and a finished run never mixed
with a new one. Trained in this process (train_in_process); Ray Train's runs of the same loop are
tested in tests/distributed/test_train.py."""

import json
import shutil

import numpy as np
import pytest

from orchestrator.config import load_config, with_fields
from orchestrator.config.sections import RewardModelScorer
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.errors import MoaError
from orchestrator.evaluation.run_front import split_prompts
from orchestrator.model.loading import load_tokenizer
from orchestrator.model.reward_model import REWARD_MODEL, build_reward_model, save_reward_model
from orchestrator.recipes.evaluate import evaluate_folder
from orchestrator.recipes.panacea import run_panacea
from orchestrator.recipes.run_folder import load_trained
from orchestrator.training.metrics_log import read_metrics

pytestmark = pytest.mark.usefixtures("train_in_process")  # the second test's run too


@pytest.fixture(scope="module")
def jsonl_config(tiny_base_dir, tmp_path_factory):
    """A run on a pairs file (not the built-in task), a few steps, no front evaluation."""
    tmp_path = tmp_path_factory.mktemp("jsonl")
    path = tmp_path / "pairs.jsonl"
    AssistantTask(seed=4).preference_pairs(48, ("helpful", "concise")).save_jsonl(path)
    return load_config(
        None,
        [
            f"model.name_or_path={tiny_base_dir}",
            "data.source=jsonl",
            f"data.path={path}",
            "data.objectives=[helpful, concise]",
            "adapter.rank=2",
            "train.batch_size=4",
            "train.max_steps=3",
            "train.log_every=1",
            "eval.enabled=false",
            f"output_dir={tmp_path / 'run'}",
        ],
    )


@pytest.fixture(scope="module")
def finished(jsonl_config, train_in_process):
    return run_panacea(jsonl_config, progress=False)


def test_a_run_on_a_pairs_file_trains_and_saves(jsonl_config, finished):
    result = finished
    assert result.front is None
    assert [r["step"] for r in result.history] == [1, 2, 3]
    logged = [
        json.loads(line)
        for line in (result.run_dir / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    assert [line["step"] for line in logged] == [1, 2, 3]
    cfg, _, model = load_trained(result.run_dir)
    assert cfg == jsonl_config
    assert model.svd_lora_config.objective_names == ("helpful", "concise")


def test_a_finished_run_is_never_silently_mixed_with_a_new_one(jsonl_config, finished, tmp_path):
    """On a copy of the finished run: refused without --overwrite, then replaced with it."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished.run_dir, run_dir)
    cfg = with_fields(jsonl_config, {"output_dir": str(run_dir)})
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "front.json").write_text("{}")  # a result of the earlier run
    with pytest.raises(MoaError, match="already holds a finished run"):
        run_panacea(cfg, progress=False)
    assert (run_dir / "adapter" / "adapter.safetensors").is_file()  # nothing was lost
    run_panacea(cfg, progress=False, overwrite=True)
    assert not (run_dir / "eval").exists()  # stale results of the old run are gone
    assert (run_dir / "adapter" / "adapter.safetensors").is_file()


@pytest.mark.ray
@pytest.mark.slow
def test_a_pairs_file_gets_a_front_and_a_best_adapter_scored_by_a_reward_model(
    jsonl_config, tiny_base_dir, tmp_path, ray_session
):
    """Reward-model and implicit scorers: the best adapter by validation hypervolume during
    training, the front on the file's test prompts after it (on the pool), and `moa eval`."""
    tokenizer = load_tokenizer(str(tiny_base_dir))
    reward = build_reward_model(
        str(tiny_base_dir), ["helpful", "concise"], False, tokenizer.pad_token_id, "float32"
    )
    save_reward_model(reward, tokenizer, tmp_path / REWARD_MODEL)
    helpful = RewardModelScorer(model=str(tmp_path / REWARD_MODEL), head="helpful")
    cfg = with_fields(
        jsonl_config,
        {
            "eval.enabled": True,
            "data.validation_fraction": 0.3,  # 44 prompts: 0.1 draws none
            "eval.scorers": {"helpful": helpful, "concise": "implicit"},
            "eval.reference_point": [-10.0, -10.0],
            "eval.every": 1,
            "eval.grid_divisions": 2,
            "eval.num_prompts": 3,
            "eval.coarse_grid_divisions": 2,
            "eval.coarse_num_prompts": 3,
            "eval.max_new_tokens": 12,
            "output_dir": str(tmp_path / "run"),
        },
    )
    result = run_panacea(cfg, progress=False)
    logged = [m["hypervolume"] for m in read_metrics(result.run_dir) if "hypervolume" in m]
    assert len(logged) == 3
    best = json.loads((result.run_dir / "best" / "best.json").read_text())
    assert best["hypervolume"] == max(logged)
    front = json.loads((result.run_dir / "eval" / "front.json").read_text())
    assert front["reference_point"] == [-10.0, -10.0]
    assert [p["preference"] for p in front["points"]] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    test_prompts = split_prompts(cfg, "test")
    assert 0 < len(test_prompts) <= 3
    assert {s["prompt"] for s in front["samples"]} <= set(test_prompts)
    assert not set(test_prompts) & set(split_prompts(cfg, "validation"))
    again, _ = evaluate_folder(result.run_dir, tmp_path / "again")
    expected = [[p["scores"][n] for n in ("helpful", "concise")] for p in front["points"]]
    assert again.points == pytest.approx(np.array(expected), abs=1e-6)
