"""The generation pool: Ray actors that each hold the base model and the SVD-LoRA adapter.

A request is (prompt, λ, sampling parameters with their seed). Each actor answers a chunk of
requests in batches with a λ per row and a KV cache, so one forward pass serves many λ; a seeded
request gives the same text whatever chunk or actor it lands on. Only adapter tensors travel
(`publish`, a few MB through the object store, versioned); the base model is loaded once per
actor. Chunks go to the actor with the fewest outstanding requests and are collected as they
finish (ray.wait). An actor that dies is restarted by Ray and its chunks are sent again, so every
request of a job is answered exactly once. The actors also score (prompt, response) rows, with
a run's scorers (reward models load once per actor, on its device) or the adapter's implicit
rewards (SIPO's judges), through the same dispatch.
"""

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError
from tqdm import tqdm

from orchestrator.config.sections import GenerationSection
from orchestrator.distributed.cluster import ensure_ray
from orchestrator.errors import MoaError
from orchestrator.evaluation.scorers import Scorers
from orchestrator.model.adapter_io import (
    adapter_tensors,
    inject_from_config,
    load_adapter_tensors,
)
from orchestrator.model.generate import generate_ids
from orchestrator.model.sampling import SamplingParams
from orchestrator.model.svd_lora import SVDLoRAConfig, svd_lora_config

ACTOR_FAILURES = RayActorError  # died, or unavailable while Ray restarts it
RESTART_PAUSE_S = 1.0  # an actor that failed gets no chunks for this long


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    preference: tuple[float, ...]
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class GenerationResult:
    text: str
    tokens: int  # new tokens generated, stop token excluded
    adapter_version: int


class GenerationWorker:
    """One actor of the pool (`ray.remote` is applied by the pool, with its resources)."""

    def __init__(
        self,
        model_name_or_path: str,
        dtype: str,
        adapter_config: dict,
        batch_size: int,
        max_prompt_tokens: int,
        threads: int,
        use_gpu: bool,
    ):
        from orchestrator.model.loading import load_model, load_tokenizer

        torch.set_num_threads(max(1, threads))
        self.tokenizer = load_tokenizer(model_name_or_path)
        self.model = load_model(model_name_or_path, dtype, "cuda" if use_gpu else "cpu")
        self.config = SVDLoRAConfig.from_dict(adapter_config)
        inject_from_config(self.model, self.config)
        self.model.eval()
        self.batch_size, self.max_prompt_tokens = batch_size, max_prompt_tokens
        self.device = "cuda" if use_gpu else "cpu"
        self.version = -1  # no adapter published yet
        self.scorers: dict[str, Scorers] = {}  # by the key GenerationPool.scorer gave them

    def load(self, version: int, tensors: dict[str, torch.Tensor]) -> int:
        load_adapter_tensors(self.model, self.config, tensors, source=f"adapter v{version}")
        self.version = version
        return version

    def _use(self, adapter: list) -> None:
        """Hold adapter `adapter[0]` = (version, ObjectRef of its tensors), loading it when this
        actor holds another version (it may have been restarted)."""
        version, tensors = adapter[0]
        if version != self.version:
            self.load(version, ray.get(tensors))

    def generate(self, requests: list[GenerationRequest], adapter: list) -> list[GenerationResult]:
        """Answers to `requests` with the adapter `adapter` names (see _use)."""
        self._use(adapter)
        ids = generate_ids(
            self.model,
            self.tokenizer,
            [r.prompt for r in requests],
            torch.tensor([r.preference for r in requests]),
            [r.params for r in requests],
            batch_size=self.batch_size,
            max_prompt_tokens=self.max_prompt_tokens,
        )
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [GenerationResult(t, len(i), self.version) for t, i in zip(texts, ids, strict=True)]

    def score(self, rows: list[tuple[str, str]], adapter: list, scorers: tuple) -> list:
        """[m] scores of each (prompt, response) row by `scorers` = (key, Scorers arguments),
        built on first use; implicit scorers read the adapter `adapter` names (see _use)."""
        self._use(adapter)
        key, arguments = scorers
        if key not in self.scorers:
            policy = (self.model, self.tokenizer)
            self.scorers[key] = Scorers(**arguments, policy=policy, device=self.device)
        prompts, responses = zip(*rows, strict=True)
        return self.scorers[key](prompts, responses).tolist()

    def pid(self) -> int:
        return os.getpid()


class GenerationPool:
    """N generation actors behind one `generate(requests)` call."""

    def __init__(
        self,
        model_name_or_path: str,
        dtype: str,
        adapter_config: SVDLoRAConfig,
        cfg: GenerationSection,
        max_prompt_tokens: int = 256,
        chunk_size: int | None = None,
    ):
        worker = ray.remote(GenerationWorker).options(
            num_cpus=cfg.cpus_per_actor,
            num_gpus=cfg.gpus_per_actor,
            max_restarts=-1,  # a dead actor comes back; the pool re-sends its chunks itself
            max_task_retries=0,
        )
        self.actors = [
            worker.remote(
                model_name_or_path,
                dtype,
                adapter_config.to_dict(),
                cfg.batch_size,
                max_prompt_tokens,
                int(cfg.cpus_per_actor),
                cfg.gpus_per_actor > 0,
            )
            for _ in range(cfg.num_actors)
        ]
        self.num_objectives = adapter_config.num_objectives
        self.chunk_size = chunk_size or cfg.batch_size
        self.version = -1
        self._adapter = None  # (version, ObjectRef of the tensors), wrapped so Ray passes the ref

    def publish(self, model_or_tensors) -> int:
        """Make these adapter tensors (or a model's) the pool's next version; returns it."""
        tensors = (
            model_or_tensors
            if isinstance(model_or_tensors, dict)
            else adapter_tensors(model_or_tensors)
        )
        self.version += 1
        self._adapter = (self.version, ray.put(tensors))
        return self.version

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        min_version: int | None = None,
        progress: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[GenerationResult]:
        """One answer per request, in order, each generated exactly once by an actor holding
        adapter version ≥ `min_version` (default: the latest published). `on_progress(answered,
        total)` is called after every chunk that comes back."""
        for i, request in enumerate(requests):
            if len(request.preference) != self.num_objectives:
                raise MoaError(
                    f"request {i}: preference has {len(request.preference)} weights; "
                    f"the adapter has {self.num_objectives} objectives"
                )
        return self._map(
            "generate",
            list(requests),
            min_version=min_version,
            desc="generation pool",
            progress=progress,
            on_progress=on_progress,
            tokens=lambda answer: answer.tokens,
        )

    def scorer(self, arguments: dict, progress: bool = False):
        """`score(prompts, responses)` → [N, m] by the Scorers of `arguments`
        (Scorers.arguments_for_run), computed on the actors against the latest adapter."""
        scorers = (repr(sorted(arguments.items())), arguments)

        def score(prompts, responses) -> np.ndarray:
            rows = list(zip(prompts, responses, strict=True))
            if not rows:
                return np.zeros((0, len(arguments["scorers"])))
            scores = self._map("score", rows, desc="score", progress=progress, extra=(scorers,))
            return np.array(scores, dtype=np.float64)

        return score

    def _map(
        self,
        method: str,
        items: list,
        *,
        extra: tuple = (),
        min_version: int | None = None,
        desc: str,
        progress: bool,
        on_progress: Callable[[int, int], None] | None = None,
        tokens: Callable[[object], int] | None = None,
    ) -> list:
        """Call actor `method` on chunks of `items` with the pool's adapter (and `extra`
        arguments); one result per item, in order, each computed exactly once (a dead actor's
        chunks are sent again)."""
        if self._adapter is None:
            raise MoaError("no adapter published to the generation pool yet: call publish()")
        if min_version is not None and self.version < min_version:
            raise MoaError(
                f"the pool holds adapter version {self.version}, older than min_version "
                f"{min_version}"
            )
        chunks = [
            list(range(start, min(start + self.chunk_size, len(items))))
            for start in range(0, len(items), self.chunk_size)
        ]
        results: list = [None] * len(items)
        done = [False] * len(items)
        outstanding = dict.fromkeys(range(len(self.actors)), 0)
        resting_until = dict.fromkeys(range(len(self.actors)), 0.0)  # after a failure
        in_flight: dict = {}  # ObjectRef → (actor index, item indices)
        bar = tqdm(total=len(items), desc=desc, unit="req", disable=not progress)
        start, token_count = time.perf_counter(), 0
        pending = list(reversed(chunks))
        while pending or in_flight:
            now = time.monotonic()
            ready = [a for a in outstanding if resting_until[a] <= now]
            while pending and ready:  # at most two chunks queued per actor
                actor = min(ready, key=outstanding.get)
                if outstanding[actor] >= 2 * self.chunk_size:
                    break
                indices = pending.pop()
                call = getattr(self.actors[actor], method)
                ref = call.remote([items[i] for i in indices], [self._adapter], *extra)
                in_flight[ref] = (actor, indices)
                outstanding[actor] += len(indices)
            if not in_flight:  # every actor is restarting
                time.sleep(RESTART_PAUSE_S)
                continue
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            actor, indices = in_flight.pop(ref)
            outstanding[actor] -= len(indices)
            try:
                chunk_results = ray.get(ref)
            except ACTOR_FAILURES:
                # Ray restarts the actor; its chunks go out again, elsewhere while it is away.
                pending.append(indices)
                resting_until[actor] = time.monotonic() + RESTART_PAUSE_S
                continue
            for i, result in zip(indices, chunk_results, strict=True):
                if done[i]:
                    raise RuntimeError(f"item {i} was answered twice")
                results[i], done[i] = result, True
            bar.update(len(indices))
            if tokens is not None:
                token_count += sum(tokens(result) for result in chunk_results)
                bar.set_postfix(tok_s=f"{token_count / (time.perf_counter() - start):.0f}")
            if on_progress is not None:
                on_progress(bar.n, len(items))
        bar.close()
        return results

    def answerer(self, progress: bool = True):
        """`answer(prompts, preferences, params)` for front evaluation (evaluate_front)."""

        def answer(prompts, preferences, params) -> list[str]:
            requests = [
                GenerationRequest(prompt, tuple(lam), p)
                for prompt, lam, p in zip(prompts, preferences.tolist(), params, strict=True)
            ]
            return [a.text for a in self.generate(requests, progress=progress)]

        return answer

    def close(self) -> None:
        """Stop the actors."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def __enter__(self) -> "GenerationPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def actor_pids(self, timeout_s: float = 120.0) -> list[int]:
        """The actors' process ids, waiting for any that is being restarted."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return ray.get([actor.pid.remote() for actor in self.actors])
            except ACTOR_FAILURES:
                if time.monotonic() > deadline:
                    raise
                time.sleep(RESTART_PAUSE_S)


def pool_for(model, model_name_or_path: str, dtype: str, cfg: GenerationSection, **options):
    """A pool serving `model`'s adapter (published as version 0) on `model_name_or_path`, on the
    connected Ray cluster (a local instance unless there is one)."""
    ensure_ray()
    pool = GenerationPool(model_name_or_path, dtype, svd_lora_config(model), cfg, **options)
    pool.publish(model)
    return pool
