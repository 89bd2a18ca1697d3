"""Reward-model scoring throughput: on the generation pool's actors against in this process.

The same (prompt, response) rows of the built-in task's test prompts are scored by a reward model
with a head per objective (`moa reward`'s reward_model/): by `Scorers` in this process (the
driver, all cores), and by a generation pool of 1 or 2 Ray actors (cores / actors threads each),
which load the reward model once each and score chunks of rows. A warm-up call runs first
everywhere (the pool's actors load the model then); the table times the second call, median and
range over `--repeats` calls.

    moa reward jobs/reward_tiny.yaml
    python bench/scoring.py runs/reward-tiny/reward_model --actors 1,2
"""

import argparse
import os
import statistics
import time

import torch
import transformers

from orchestrator.config.sections import GenerationSection, RewardModelScorer
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.distributed.generation import pool_for
from orchestrator.evaluation.scorers import Scorers
from orchestrator.model.loading import load_model, resolve_model_path
from orchestrator.model.svd_lora import inject_svd_lora

OBJECTIVES = ("helpful", "harmless")


def timed(score, prompts, responses, repeats: int) -> list[float]:
    score(prompts[:8], responses[:8])  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        score(prompts, responses)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reward_model")
    parser.add_argument("--model", default="builtin:tiny", help="the pool's policy model")
    parser.add_argument("--actors", default="1,2")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(cores)

    pairs = AssistantTask(seed=0).preference_pairs(args.rows, OBJECTIVES, split="test")
    prompts = [p.prompt for p in pairs]
    responses = [p.response_a for p in pairs]
    heads = {o: RewardModelScorer(model=args.reward_model, head=o) for o in OBJECTIVES}
    arguments = {"scorers": heads, "batch_size": args.batch_size}

    rows = [
        (
            "driver (this process)",
            cores,
            timed(Scorers(**arguments), prompts, responses, args.repeats),
        )
    ]
    path = resolve_model_path(args.model)
    policy = inject_svd_lora(load_model(path), len(OBJECTIVES), rank=8, alpha=64, seed=0)
    import ray

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    try:
        for n in [int(a) for a in args.actors.split(",")]:
            cfg = GenerationSection(num_actors=n, cpus_per_actor=cores / n)
            with pool_for(policy, path, "float32", cfg) as pool:
                seconds = timed(pool.scorer(arguments), prompts, responses, args.repeats)
            rows.append((f"pool, {n} actor{'s' * (n > 1)}", cores // n, seconds))
    finally:
        ray.shutdown()
    print(
        f"{args.reward_model}: {len(prompts)} rows, batch {args.batch_size}, fp32 CPU, "
        f"{cores} cores"
    )
    print("| where | threads each | rows/s (median) | range |")
    print("|---|---|---|---|")
    for where, threads, seconds in rows:
        rates = sorted(len(prompts) / s for s in seconds)
        print(
            f"| {where} | {threads} | {statistics.median(rates):.0f} | "
            f"{rates[0]:.0f}–{rates[-1]:.0f} |"
        )


if __name__ == "__main__":
    main()
