"""Continuous against static batching, on one model in this process: the same requests, each
with its own λ and a max_tokens drawn from 8–128, answered by

  static      the decoder with refill off: `slots` requests in arrival order, decoded until the
              longest of them ends, then the next `slots` (what the pool and server did before)
  continuous  the decoder: a finished row's slot takes the next request at the next step

tokens/s counts generated tokens over the wall time; "batch" is the mean number of rows a
forward pass decodes for; "host ms" is the time per step outside the model's forward passes
(scheduling, sampling, masks: what the decoding loop adds). Greedy, or sampled with
--temperature. Medians over --repeats runs, the range in brackets.

    python bench/decoding.py --requests 128 --slots 8,32
"""

import argparse
import random
import statistics
import time

import torch

from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.encoding import encode_prompt
from orchestrator.model.decoder import ContinuousDecoder
from orchestrator.model.loading import load_model, load_tokenizer
from orchestrator.model.sampling import SamplingParams, stop_token_ids
from orchestrator.model.svd_lora import inject_svd_lora


class ForwardClock:
    """Counts the model's forward passes, their rows and their time."""

    def __init__(self, model):
        self.model, self.original = model, model.forward
        self.reset()
        model.forward = self

    def reset(self) -> None:
        self.seconds, self.passes, self.rows = 0.0, 0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.original(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        ids = kwargs["input_ids"]
        if ids.shape[1] == 1:  # a decoding step, not a prefill
            self.passes += 1
            self.rows += ids.shape[0]
        return out


def workload(tokenizer, count: int, temperature: float, seed: int) -> list:
    rng = random.Random(seed)
    prompts = AssistantTask().prompts("test")
    jobs = []
    for i in range(count):
        lam = rng.random()
        params = SamplingParams(rng.randint(8, 128), temperature, seed=i)
        jobs.append(
            (encode_prompt(tokenizer, prompts[i % len(prompts)], 64), [lam, 1 - lam], params)
        )
    return jobs


def decode(model, tokenizer, jobs, slots: int, refill: bool) -> tuple[int, int]:
    """(tokens, steps) of `jobs` through a decoder of `slots` slots."""
    decoder = ContinuousDecoder(
        model,
        tokenizer.pad_token_id,
        stop_token_ids(model, tokenizer),
        max_num_seqs=slots,
        max_prompt_tokens=64,
        max_new_tokens=128,
        refill=refill,
    )
    for i, (ids, lam, params) in enumerate(jobs):
        decoder.add(i, ids, lam, params)
    tokens = steps = 0
    while decoder.has_work():
        pieces = decoder.step()
        steps += 1
        tokens += sum(piece.token is not None for _, piece in pieces)
    return tokens, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--slots", default="8,32")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.model)
    model = inject_svd_lora(load_model(args.model), 2, rank=8, alpha=64.0).eval()
    clock = ForwardClock(model)
    jobs = workload(tokenizer, args.requests, args.temperature, seed=0)
    print(
        f"{args.requests} requests, max_tokens 8–128, temperature {args.temperature}, "
        f"{torch.get_num_threads()} threads, {args.model}"
    )
    print("| slots | engine | tokens/s | batch | steps | host ms/step |")
    print("|---|---|---|---|---|---|")
    for slots in [int(s) for s in args.slots.split(",")]:
        runs: dict = {"static": [], "continuous": []}
        for _ in range(args.repeats):
            for name in runs:  # interleaved
                clock.reset()
                start = time.perf_counter()
                tokens, steps = decode(model, tokenizer, jobs, slots, name == "continuous")
                wall = time.perf_counter() - start
                host = (wall - clock.seconds) / steps * 1000
                runs[name].append((tokens / wall, clock.rows / max(clock.passes, 1), steps, host))
        for name, measured in runs.items():
            rate = [m[0] for m in measured]
            host = [m[3] for m in measured]
            print(
                f"| {slots} | {name} | {statistics.median(rate):.0f} [{min(rate):.0f}–"
                f"{max(rate):.0f}] | {measured[0][1]:.1f} | {measured[0][2]} | "
                f"{statistics.median(host):.2f} [{min(host):.2f}–{max(host):.2f}] |"
            )


if __name__ == "__main__":
    main()
