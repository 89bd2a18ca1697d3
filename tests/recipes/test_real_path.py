"""The real path, end to end on the shared Ray instance, as a user with their own data walks it
(README, "Your own data"): the built-in task's pairs written in PKU-SafeRLHF's own columns to a
parquet file and reward models trained on it by `moa reward` (the session's `real_path`), Panacea
trained on the same file with `data.source: pku_saferlhf` and those reward models as its scorers
— a front on the file's test prompts, the best adapter by validation hypervolume, `moa eval`
again — a `moa compare` of two methods, and the best adapter served. The sweep on the same data
and scorers is tests/recipes/test_sweep.py's. Every model and dataset is loaded through the code
path a hub model and a hub dataset take."""

import json
import socket
import urllib.request

import numpy as np
import pytest
import yaml
from ray import serve

from orchestrator.algorithms.sipo import pairs_to_improve
from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.config.sections import RewardModelScorer
from orchestrator.data.sources import load_training_pairs
from orchestrator.distributed.serve import deploy
from orchestrator.evaluation.report import read_front
from orchestrator.evaluation.run_front import split_prompts
from orchestrator.evaluation.scorers import Scorers
from orchestrator.model.adapter_io import load_adapter
from orchestrator.model.generate import generate
from orchestrator.model.loading import load_model
from orchestrator.model.sampling import SamplingParams
from orchestrator.recipes import run_folder
from orchestrator.recipes.serve import served_model
from orchestrator.training.metrics_log import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

OBJECTIVES = ("helpful", "harmless")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def walk(real_path, tiny_base_dir, tmp_path_factory, train_here):
    """Panacea on the real path's file, judged by its reward models, from a YAML file; trained
    in this process (the sweep's trials train on the same file with the same scorers on Ray
    Train)."""
    root = tmp_path_factory.mktemp("walk")
    panacea = {
        "model": {"name_or_path": str(tiny_base_dir)},
        "data": {"source": "pku_saferlhf", "path": str(real_path.data)},
        "adapter": {"rank": 2},
        "train": {"max_steps": 4, "batch_size": 4, "warmup_steps": 0, "learning_rate": 1e-2},
        "checkpoint": {"every": 2},
        "eval": {
            "scorers": real_path.scorers,
            "reference_point": list(real_path.reference_point),
            "every": 2,
            "grid_divisions": 2,
            "num_prompts": 3,
            "coarse_grid_divisions": 2,
            "coarse_num_prompts": 3,
            "max_new_tokens": 8,
        },
        "logging": {"tensorboard": False, "mlflow": False},
        "output_dir": str(root / "panacea"),
    }
    (root / "panacea.yaml").write_text(yaml.safe_dump(panacea))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_folder, "train", train_here)
        assert main(["train", str(root / "panacea.yaml")]) == 0
    return root, load_config(root / "panacea.yaml")


def test_reward_models_are_trained_and_measured_on_the_files_test_pairs(real_path):
    run = real_path.reward_models.parent
    accuracy = json.loads((run / "accuracy.json").read_text())
    assert set(accuracy) == set(OBJECTIVES)
    assert all(a["pairs"] > 0 and 0 <= a["accuracy"] <= 1 for a in accuracy.values())
    assert (real_path.reward_models / "config.json").is_file()


def test_the_run_gets_a_front_on_test_prompts_and_a_best_adapter_on_validation_prompts(
    walk, real_path
):
    root, cfg = walk
    run = root / "panacea"
    logged = [m["hypervolume"] for m in read_metrics(run) if "hypervolume" in m]
    assert len(logged) == 2  # steps 2 and 4
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["hypervolume"] == max(logged)
    front = json.loads((run / "eval" / "front.json").read_text())
    assert front["reference_point"] == list(real_path.reference_point)
    assert [p["preference"] for p in front["points"]] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    test_prompts = split_prompts(cfg, "test")
    assert 0 < len(test_prompts) <= 3
    assert {s["prompt"] for s in front["samples"]} <= set(test_prompts)
    assert not set(test_prompts) & set(split_prompts(cfg, "validation"))
    # The scores are the reward models' outputs, not bounded like the ground truth's.
    scores = np.array([[p["scores"][n] for n in OBJECTIVES] for p in front["points"]])
    assert not ((scores >= 0) & (scores <= 1)).all()


def test_moa_eval_measures_the_same_front_again(walk, tmp_path):
    root, _ = walk
    assert main(["eval", str(root / "panacea"), "--output-dir", str(tmp_path)]) == 0
    again = read_front(tmp_path / "front.json")
    first = read_front(root / "panacea" / "eval" / "front.json")
    assert again.points == pytest.approx(first.points, abs=1e-6)


def test_moa_compare_judges_every_method_with_the_reward_models(
    walk, real_path, train_here, monkeypatch
):
    root, cfg = walk
    monkeypatch.setattr(run_folder, "train", train_here)  # the recipe, not Ray Train, is tested

    def on_the_driver(*args):
        raise AssertionError("the reward models scored on the driver, not on the pool's actors")

    monkeypatch.setattr(Scorers, "__call__", on_the_driver)
    out = root / "compare"
    assert main([
        "compare", str(root / "panacea.yaml"), f"output_dir={out}", "eval.every=0",
        "compare.methods=[panacea_ls, dpo_soups]", "compare.seeds=[0]", "compare.grid_divisions=2",
    ]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results] == ["panacea_ls", "dpo_soups"]
    fronts = [read_front(out / r["front"]) for r in results]
    assert all(list(f.reference_point) == list(real_path.reference_point) for f in fronts)
    assert not all(((f.points >= 0) & (f.points <= 1)).all() for f in fronts)  # RM logits
    assert all({s["prompt"] for s in f.samples} <= set(split_prompts(cfg, "test")) for f in fronts)
    assert f"Data: {real_path.data}, objectives" in (out / "report.md").read_text()


def test_the_best_adapter_is_served_and_answers_as_it_does_offline(walk, tiny_base_dir, tokenizer):
    root, cfg = walk
    served = served_model(str(root / "panacea"), [f"serve.port={free_port()}"])
    assert served.adapter == root / "panacea" / "best" / "adapter"
    prompt = split_prompts(cfg, "test")[0]
    url = deploy(served)
    try:
        body = {"prompt": prompt, "preference": [0.3, 0.7], "temperature": 0, "max_tokens": 8}
        request = urllib.request.Request(
            f"{url}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)["choices"][0]["text"]
    finally:
        serve.shutdown()
    model = load_adapter(load_model(str(tiny_base_dir)), served.adapter)
    offline = generate(model, tokenizer, [prompt], [(0.3, 0.7)], SamplingParams(max_new_tokens=8))
    assert answer == offline[0]


def test_moa_sipo_judges_its_candidates_with_the_reward_models(
    walk, real_path, train_here, monkeypatch
):
    """SIPO from the walk's Panacea run, its judges the reward models: each candidate and both
    of a pair's own responses get the reward models' scores; the front after the round is
    judged by them too."""
    root, cfg = walk
    monkeypatch.setattr(run_folder, "train", train_here)  # the recipe, not Ray Train, is tested
    out = root / "sipo"
    assert main([
        "sipo", str(root / "panacea.yaml"), f"output_dir={out}",
        f"sipo.init_from={root / 'panacea'}", "sipo.judge=reward_models",
        f"sipo.reward_models={json.dumps(real_path.scorers)}",
        "sipo.max_pairs=4", "sipo.max_new_tokens=8",
    ]) == 0  # fmt: skip
    records = [json.loads(line) for line in (out / "round_1" / "candidates.jsonl").open()]
    assert len(records) == 4 and all(len(r["candidates"]) == 4 for r in records)
    heads = {o: RewardModelScorer(model=str(real_path.reward_models), head=o) for o in OBJECTIVES}
    here = Scorers(heads, max_prompt_tokens=cfg.data.max_prompt_tokens, max_response_tokens=97)
    tried = pairs_to_improve(load_training_pairs(cfg.data), 4, cfg.sipo.seed, 1)
    for pair, record in zip(tried, records, strict=True):
        assert record["prompt"] == pair.prompt
        expected = here([pair.prompt] * 2, [pair.response_a, pair.response_b])
        assert np.allclose([record["rewards_a"], record["rewards_b"]], expected, atol=1e-5)
        answers = [c["answer"] for c in record["candidates"]]
        scored = here([pair.prompt] * len(answers), answers)
        assert np.allclose([c["rewards"] for c in record["candidates"]], scored, atol=1e-5)
    [stats] = json.loads((out / "sipo.json").read_text())
    assert stats["pairs_tried"] == 4 and stats["hypervolume_after"] is not None
