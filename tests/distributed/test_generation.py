"""The generation pool answers exactly as offline generation does, after syncs and actor deaths."""

import os
import signal

import pytest

from orchestrator.config.sections import GenerationSection, TrainSection
from orchestrator.distributed.generation import GenerationPool, GenerationRequest
from orchestrator.errors import MoaError
from orchestrator.model.generate import generate
from orchestrator.model.loading import load_model
from orchestrator.model.sampling import SamplingParams
from orchestrator.model.svd_lora import inject_svd_lora, svd_lora_config
from orchestrator.training.trainer import MultiObjectiveTrainer

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

PROMPTS = [
    "How do I sharpen a kitchen knife?",
    "How can I start a campfire?",
    "What is a good way to learn to swim?",
    "How do I clean a cast iron pan?",
]
LAMBDAS = [(1.0, 0.0), (0.7, 0.3), (0.5, 0.5), (0.0, 1.0)]


@pytest.fixture(scope="module")
def steerable(tiny_base_dir, perturb):
    """The tiny base with an adapter large enough that λ changes the answers."""
    model = inject_svd_lora(load_model(str(tiny_base_dir)), 2, rank=4, alpha=32, seed=0)
    perturb(model, seed=1, std=0.05, scale=3.0)
    return model


@pytest.fixture(scope="module")
def pool(tiny_base_dir, steerable):
    cfg = GenerationSection(num_actors=2, cpus_per_actor=1, batch_size=8)
    pool = GenerationPool(
        str(tiny_base_dir), "float32", svd_lora_config(steerable), cfg, chunk_size=8
    )
    pool.publish(steerable)
    return pool


def requests(max_new_tokens=12):
    greedy = SamplingParams(max_new_tokens=max_new_tokens)
    sampled = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, seed=5)
    return [
        GenerationRequest(prompt, lam, sampled if i % 3 == 2 else greedy)
        for i, (prompt, lam) in enumerate((p, lam) for p in PROMPTS for lam in LAMBDAS)
    ]


def offline(model, tokenizer, request):
    """The request generated alone, in this process."""
    return generate(model, tokenizer, [request.prompt], list(request.preference), [request.params])[
        0
    ]


def test_batched_per_row_lambda_answers_equal_each_request_alone(pool, steerable, tokenizer):
    jobs = requests()
    answers = pool.generate(jobs)
    assert [a.text for a in answers] == [offline(steerable, tokenizer, r) for r in jobs]
    assert len({a.text for a in answers}) > len(PROMPTS)  # λ and sampling change the answers
    assert all(a.adapter_version == 0 and a.tokens > 0 for a in answers)


def test_after_a_training_step_and_a_sync_the_pool_answers_as_the_trainer_model(
    pool, steerable, tokenizer, encoded
):
    cfg = TrainSection(batch_size=8, max_steps=1, warmup_steps=0, learning_rate=0.5)
    MultiObjectiveTrainer(steerable, encoded, tokenizer.pad_token_id, cfg).train(progress=False)
    jobs = requests()
    before = [a.text for a in pool.generate(jobs)]
    version = pool.publish(steerable)
    answers = pool.generate(jobs, min_version=version)
    assert all(a.adapter_version == version for a in answers)
    assert [a.text for a in answers] == [offline(steerable, tokenizer, r) for r in jobs]
    assert [a.text for a in answers] != before  # the step changed the model
    with pytest.raises(MoaError, match="min_version"):
        pool.generate(jobs, min_version=version + 1)


def test_every_request_is_answered_once_when_an_actor_is_killed(pool, steerable, tokenizer):
    jobs = [
        GenerationRequest(PROMPTS[i % 4], LAMBDAS[i % 3], SamplingParams(max_new_tokens=24))
        for i in range(200)
    ]
    victim = pool.actor_pids()[1]
    killed_after = []

    def kill_once(answered, total):
        if not killed_after:  # the victim still has chunks in flight
            os.kill(victim, signal.SIGKILL)
            killed_after.append(answered)

    answers = pool.generate(jobs, on_progress=kill_once)
    assert killed_after and killed_after[0] < len(jobs)
    assert victim not in pool.actor_pids()  # Ray restarted it
    expected = {r: offline(steerable, tokenizer, r) for r in set(jobs)}
    assert [a.text for a in answers] == [expected[r] for r in jobs]


def test_a_request_with_the_wrong_number_of_weights_is_refused(pool):
    with pytest.raises(MoaError, match="request 1: preference has 3 weights"):
        pool.generate(
            [GenerationRequest("hi", (1.0, 0.0)), GenerationRequest("hi", (0.2, 0.3, 0.5))]
        )


def test_implicit_rewards_on_the_actors_equal_the_offline_ones(pool, steerable, tokenizer):
    from orchestrator.rewards.implicit import implicit_rewards

    pool.publish(steerable)
    prompts = [p for p in PROMPTS for _ in range(5)]  # 20 rows: three chunks of up to 8
    responses = [f"Step {i}: wash it, then dry it well." for i in range(len(prompts))]
    scorers = {"scorers": {"helpful": "implicit", "harmless": "implicit"}, "implicit_beta": 0.2}
    rewards = pool.scorer(scorers)(prompts, responses)
    expected = implicit_rewards(steerable, tokenizer, prompts, responses, beta=0.2)
    assert rewards.shape == (20, 2)
    assert abs(rewards - expected).max() < 1e-5
    assert abs(rewards).min() > 0  # the adapter moved every response's likelihood


def test_scores_on_the_actors_equal_the_scorers_in_this_process(
    pool, steerable, tokenizer, tiny_base_dir, tmp_path
):
    from orchestrator.config.sections import RewardModelScorer
    from orchestrator.evaluation.scorers import Scorers
    from orchestrator.model.reward_model import build_reward_model, save_reward_model

    reward = build_reward_model(
        str(tiny_base_dir), ["helpful", "harmless"], False, tokenizer.pad_token_id, "float32"
    )
    save_reward_model(reward, tokenizer, tmp_path / "rm")
    pool.publish(steerable)
    arguments = {
        "scorers": {
            "helpful": "implicit",
            "harmless": RewardModelScorer(model=str(tmp_path / "rm"), head=1, sign=-1),
        },
        "implicit_beta": 0.2,
        "batch_size": 8,
    }
    prompts = [p for p in PROMPTS for _ in range(5)]  # 20 rows: three chunks of up to 8
    responses = [f"Step {i}: wash it, then dry it well." for i in range(len(prompts))]
    scores = pool.scorer(arguments)(prompts, responses)
    expected = Scorers(**arguments, policy=(steerable, tokenizer))(prompts, responses)
    assert scores.shape == (20, 2)
    assert abs(scores - expected).max() < 1e-5
    assert len(set(scores[:, 1].round(6))) > 1  # the reward model tells the responses apart
