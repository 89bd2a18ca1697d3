"""Generation pool throughput against plain `model.generate`, one request at a time.

Every request has its own λ (evenly spread over the simplex of 2 objectives) and the same
held-out prompts of the built-in task, greedy, `--max-new-tokens` at most. The baseline is
Hugging Face `model.generate` in this process, one request after another with that request's λ
set on the model (all cores). The pool runs 1 or 2 Ray actors (cores / actors threads each),
each answering chunks of `batch` requests in one batched, KV-cached pass with a λ per row. A
warm-up job runs first on every pool; the table times the second job. tokens/s counts generated
tokens (the stop token excluded) over the wall time of the whole job.

    python bench/generation.py --actors 1,2 --batches 1,8,32,64
"""

import argparse
import os
import time

import torch
import transformers

from orchestrator.config.sections import GenerationSection
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.encoding import encode_prompt
from orchestrator.distributed.generation import GenerationRequest, pool_for
from orchestrator.model.loading import load_model, load_tokenizer, resolve_model_path
from orchestrator.model.sampling import SamplingParams, stop_token_ids
from orchestrator.model.svd_lora import inject_svd_lora, set_preference


def requests(count: int, max_new_tokens: int) -> list[GenerationRequest]:
    prompts = AssistantTask().prompts("test")
    params = SamplingParams(max_new_tokens=max_new_tokens)
    return [
        GenerationRequest(prompts[i % len(prompts)], (i / (count - 1), 1 - i / (count - 1)), params)
        for i in range(count)
    ]


@torch.inference_mode()
def one_at_a_time(model, tokenizer, jobs: list[GenerationRequest]) -> tuple[int, float]:
    """(tokens, seconds) of model.generate per request."""
    stops = list(stop_token_ids(model, tokenizer))
    tokens, start = 0, time.perf_counter()
    for job in jobs:
        set_preference(model, list(job.preference))
        ids = torch.tensor([encode_prompt(tokenizer, job.prompt, 64)])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=job.params.max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )[0, ids.shape[1] :].tolist()
        tokens += next((i for i, t in enumerate(out) if t in stops), len(out))
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--actors", default="1,2")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--requests", type=int, default=128, help="requests per pool job")
    parser.add_argument("--baseline-requests", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    actors = [int(a) for a in args.actors.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    cores = os.cpu_count() or 1
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(cores)

    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)
    model = inject_svd_lora(load_model(path), 2, rank=8, alpha=64, seed=0).eval()
    jobs = requests(args.requests, args.max_new_tokens)
    base_tokens, base_seconds = one_at_a_time(model, tokenizer, jobs[: args.baseline_requests])
    baseline = base_tokens / base_seconds

    import ray

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    print(
        f"{args.model}, fp32 CPU, {cores} cores, greedy ≤ {args.max_new_tokens} new tokens, "
        f"a λ per request\nbaseline model.generate one at a time: {args.baseline_requests} "
        f"requests, {base_tokens} tokens in {base_seconds:.1f} s = {baseline:.0f} tok/s"
    )
    header = (
        f"{'actors':>6} {'batch':>5} {'requests':>8} {'tokens':>7} {'s':>6} {'tok/s':>7} "
        f"{'vs baseline':>11}"
    )
    print(header)
    print("-" * len(header))
    try:
        for n in actors:
            for batch in batches:
                cfg = GenerationSection(num_actors=n, cpus_per_actor=cores / n, batch_size=batch)
                with pool_for(model, path, "float32", cfg, max_prompt_tokens=64) as pool:
                    pool.generate(jobs[: n * batch])  # warm-up: every actor loaded and run once
                    start = time.perf_counter()
                    answers = pool.generate(jobs)
                    seconds = time.perf_counter() - start
                tokens = sum(a.tokens for a in answers)
                print(
                    f"{n:>6} {batch:>5} {len(jobs):>8} {tokens:>7} {seconds:>6.1f} "
                    f"{tokens / seconds:>7.0f} {tokens / seconds / baseline:>10.1f}x",
                    flush=True,
                )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
