"""The SIPO round's judging and review wiring, with a stand-in for the generation pool."""

import numpy as np
import pytest

from orchestrator.config import load_config
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.recipes.sipo import SIPORounds, realign_config

OBJECTIVES = ["helpful", "harmless"]


class FakePool:
    """Rewrites Q1's answer better and Q0's worse, and drafts "draft answer"; rewards a response by
    its length (helpful) and its number of words (harmless)."""

    def generate(self, requests, progress=False):
        from orchestrator.distributed.generation import GenerationResult

        def text(prompt):
            if prompt.startswith("Q") and "Rewrite the draft" in prompt:
                return "better answer for Q1" if "Q1" in prompt else "x"
            return "draft answer"

        return [GenerationResult(text(r.prompt), 1, 0) for r in requests]

    def scorer(self, arguments, progress=False):
        assert arguments["scorers"] == dict.fromkeys(OBJECTIVES, "implicit")  # sipo.judge's default
        return lambda prompts, responses: np.array(
            [[len(r), len(r.split())] for r in responses], dtype=float
        )


@pytest.fixture
def steps(tiny_base_dir):
    def make(*overrides):
        cfg = load_config(None, [f"model.name_or_path={tiny_base_dir}", *overrides])
        return SIPORounds(cfg, progress=False)

    return make


def test_review_rewrites_a_candidate_only_where_the_rewrite_is_better_on_some_judge(steps):
    step = steps("sipo.review=true")
    prompts = ["Q0", "Q1"]
    answers = ["draft answer", "draft answer"]
    rewards = step._judge(FakePool(), prompts, answers)
    params = [None, None]
    kept = step._review(FakePool(), prompts, [(0.5, 0.5)] * 2, params, answers, rewards)
    assert kept.tolist() == [False, True]  # "x" is worse on both judges
    assert answers == ["draft answer", "better answer for Q1"]
    assert rewards.tolist() == [[12.0, 2.0], [20.0, 4.0]]


def test_ground_truth_judge_is_the_tasks_scorers(steps):
    step = steps("sipo.judge=ground_truth")
    task = AssistantTask()
    prompt = task.prompts("train")[0]
    answers = [a for _, a in task.sft_examples(3)]
    expected = task.score_batch([prompt] * 3, answers, OBJECTIVES)
    assert (step._judge(None, [prompt] * 3, answers) == expected).all()


def test_realignment_config_is_dpo_plus_nll_anchored_on_the_start(steps, tmp_path):
    step = steps("train.batch_size=4", "scaling.num_workers=2", "sipo.epochs=1.5")
    cfg = realign_config(step.cfg, tmp_path / "train", tmp_path / "start", num_pairs=20)
    assert cfg.train.reference == "initial" and cfg.adapter.init_from == str(tmp_path / "start")
    assert (cfg.train.beta, cfg.train.nll_weight, cfg.train.learning_rate) == (0.1, 0.1, 5e-4)
    assert cfg.train.max_steps == 4  # ⌈1.5 × 20 / (4 × 2)⌉
    assert cfg.eval.every == 0 and cfg.output_dir == str(tmp_path / "train")


@pytest.mark.parametrize(("realign_at", "per_pair"), [("generated", True), ("sampled", False)])
def test_realignment_trains_each_pair_at_its_candidates_lambda_or_samples_one(
    steps, tmp_path, realign_at, per_pair
):
    step = steps(f"sipo.realign_at={realign_at}")
    cfg = realign_config(step.cfg, tmp_path / "train", tmp_path / "start", num_pairs=20)
    assert cfg.train.preference_per_pair is per_pair


def test_reward_model_judges_score_on_the_pool_in_objective_order(steps):
    """The pool scores with the configured judges, objectives in data order, with room for the
    longer of the candidates and the pair's own responses."""
    asked = []

    class ScoringPool:
        def scorer(self, arguments, progress=False):
            asked.append(arguments)
            return lambda prompts, responses: np.ones((len(prompts), 2))

    step = steps(
        "sipo.judge=reward_models",
        "sipo.reward_models={harmless: {model: cost, sign: -1}, helpful: {model: rm}}",
        "sipo.max_new_tokens=40",
        "data.max_response_tokens=64",
    )
    assert step._judge(ScoringPool(), ["Q0"], ["draft"]).shape == (1, 2)
    [arguments] = asked
    judges = arguments["scorers"]
    assert list(judges) == OBJECTIVES
    assert (judges["helpful"].model, judges["harmless"].sign) == ("rm", -1)
    assert arguments["max_response_tokens"] == 65


def test_implicit_judges_are_the_current_adapters_rewards_at_the_judges_beta(steps):
    asked = []

    class ScoringPool:
        def scorer(self, arguments, progress=False):
            asked.append(arguments)
            return lambda prompts, responses: np.ones((len(prompts), 2))

    step = steps(
        "sipo.judge=implicit",
        "sipo.judge_beta=0.3",
        "sipo.max_new_tokens=40",
        "data.max_response_tokens=64",
    )
    assert step._judge(ScoringPool(), ["Q0"], ["draft"]).shape == (1, 2)
    [arguments] = asked
    assert arguments["scorers"] == {"helpful": "implicit", "harmless": "implicit"}
    assert arguments["implicit_beta"] == 0.3
    assert arguments["max_response_tokens"] == 65  # the longer of candidates and originals
