"""Serving throughput and latency over HTTP: continuous against static batching, same replica.

One replica of the steerable model on a local Ray instance (`moa serve`'s deploy path, 127.0.0.1).
Each request has its own λ (evenly spread over the simplex of 2 objectives), a held-out prompt of
the built-in task, greedy, and a max_tokens drawn from 8–`--max-tokens` (seeded). `concurrency`
client threads send requests back to back. The replica's decoder runs with serve.batching
continuous (a request joins the running batch at the next step) or static (a batch runs until
its longest answer ends), switched in place through the deployment's user_config, in turn for
each concurrency. A warm-up round runs first. req/s and tokens/s are over the wall time of the
whole round; latency is per request, from sending it to its last byte; mean batch is the rows a
decoding step of the replica decoded, on average.

    python bench/serve.py --concurrency 1,8,32,64,128 --requests 256
"""

import argparse
import json
import os
import random
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import transformers


def post(url: str, body: dict) -> tuple[float, int]:
    """(seconds, completion tokens) of one request."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.load(response)
    return time.perf_counter() - start, answer["usage"]["completion_tokens"]


def bodies(count: int, max_tokens: int) -> list[dict]:
    from orchestrator.data.assistant_task import AssistantTask

    prompts = AssistantTask().prompts("test")
    rng = random.Random(0)
    return [
        {
            "prompt": prompts[i % len(prompts)],
            "preference": [i / (count - 1), 1 - i / (count - 1)],
            "temperature": 0,
            "max_tokens": rng.randint(8, max_tokens),
        }
        for i in range(count)
    ]


def run_round(url: str, requests: list[dict], concurrency: int) -> dict:
    stats_before = get(f"{url}/v1/stats")
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as threads:
        results = list(threads.map(lambda b: post(f"{url}/v1/completions", b), requests))
    seconds = time.perf_counter() - start
    stats = get(f"{url}/v1/stats")
    latencies = np.array([r[0] for r in results]) * 1000
    steps = stats["steps"] - stats_before["steps"]
    return {
        "seconds": seconds,
        "rps": len(requests) / seconds,
        "tok_s": sum(r[1] for r in results) / seconds,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "mean_batch": (stats["rows"] - stats_before["rows"]) / max(steps, 1),
    }


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def fresh_adapter(model: str, directory: Path) -> Path:
    """An adapter of the built-in shape with random σ, so that λ changes the answers."""
    import torch

    from orchestrator.model.adapter_io import save_adapter
    from orchestrator.model.loading import load_model
    from orchestrator.model.svd_lora import inject_svd_lora, svd_lora_layers

    base = load_model(model)
    steerable = inject_svd_lora(base, 2, 8, 64, objective_names=("helpful", "harmless"), seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in svd_lora_layers(steerable):
            layer.lora_sigma.copy_(torch.randn(layer.lora_sigma.shape, generator=generator) * 0.5)
    return save_adapter(steerable, directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="a run or adapter folder (default: builtin:tiny, fresh)")
    parser.add_argument("--concurrency", default="1,8,32,64,128")
    parser.add_argument("--requests", type=int, default=256, help="requests per round")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--port", type=int, default=8471)
    args = parser.parse_args()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    transformers.utils.logging.disable_progress_bar()
    import ray
    from ray import serve

    from orchestrator.distributed.serve import deploy
    from orchestrator.model.loading import resolve_model_path
    from orchestrator.recipes.serve import served_model

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or str(fresh_adapter(resolve_model_path("builtin:tiny"), Path(tmp)))
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        concurrency = [int(c) for c in args.concurrency.split(",")]
        requests = bodies(args.requests, args.max_tokens)
        settings = [
            f"serve.port={args.port}",
            f"serve.max_tokens={args.max_tokens}",
            f"serve.default_max_tokens={args.max_tokens}",
            f"serve.num_cpus={max(1, cores - 1)}",
            f"serve.max_ongoing_requests={max(64, 2 * max(concurrency))}",
            f"serve.max_waiting_requests={max(concurrency)}",  # every client waits, none is refused
            f"serve.max_batch_size={args.max_batch_size}",
        ]
        print(
            f"{source}: 1 replica ({max(1, cores - 1)} threads, {args.max_batch_size} slots), fp32 "
            f"CPU, {cores} cores, greedy, max_tokens 8–{args.max_tokens}, a λ per request, "
            f"{args.requests} requests per round"
        )
        header = (
            f"{'batching':>10} {'conc.':>5} {'req/s':>7} {'tok/s':>7} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'mean batch':>10}"
        )
        print(header)
        print("-" * len(header))
        results = {}
        try:
            url = deploy(served_model(source, [*settings, "serve.batching=continuous"]))
            run_round(url, requests[:16], 8)  # warm-up
            for c in concurrency:
                for mode in ("continuous", "static"):  # interleaved, switched in place
                    url = deploy(served_model(source, [*settings, f"serve.batching={mode}"]))
                    r = run_round(url, requests, c)
                    results[mode, c] = r
                    print(
                        f"{mode:>10} {c:>5} {r['rps']:>7.2f} {r['tok_s']:>7.0f} {r['p50']:>8.0f} "
                        f"{r['p99']:>8.0f} {r['mean_batch']:>10.1f}",
                        flush=True,
                    )
        finally:
            serve.shutdown()
            ray.shutdown()
    for c in concurrency:
        if ("continuous", c) in results and ("static", c) in results:
            gain = results["continuous", c]["rps"] / results["static", c]["rps"]
            print(f"continuous / static at concurrency {c}: {gain:.2f}x requests/s")


if __name__ == "__main__":
    main()
