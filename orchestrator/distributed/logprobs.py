"""Summed response log-probs of every training pair under one frozen model, as a Ray task.

SPO's and MODPO's margins are functions of frozen models (π_ref, earlier stages, experts), so
they are computed once per dataset, on a worker of the kind training uses, and kept on disk.
"""

from pathlib import Path

import ray
import torch

from orchestrator.algorithms.panacea import pair_logprobs
from orchestrator.config import RunConfig, with_fields
from orchestrator.data.encoding import encode_pairs
from orchestrator.data.packing import pair_batch
from orchestrator.data.schema import PairDataset
from orchestrator.distributed.cluster import ensure_ray, for_workers
from orchestrator.model.build import build_model
from orchestrator.training.reference_cache import cached_reference, keep_reference, reference_key


def frozen_logprobs(
    cfg: RunConfig, pairs: PairDataset, adapter: Path | None, lam: list[float] | None = None
) -> torch.Tensor:
    """[N, 2] log-probs of each pair's responses (a, b): under π_ref (the base model) when
    `adapter` is None, else under that adapter at λ."""
    ensure_ray()
    frozen = with_fields(cfg, {"adapter.init_from": None if adapter is None else str(adapter)})
    task = ray.remote(_frozen_logprobs).options(
        num_cpus=cfg.scaling.cpus_per_worker, num_gpus=int(cfg.scaling.use_gpu)
    )
    return ray.get(task.remote(for_workers(frozen), pairs, lam))


def _frozen_logprobs(cfg: RunConfig, pairs: PairDataset, lam: list[float] | None) -> torch.Tensor:
    """π_ref's come from the reference cache when a training run or an earlier task on the
    same pairs and model has computed them, batched as training batches them."""
    tokenizer, model = build_model(cfg, device="cuda" if cfg.scaling.use_gpu else "cpu")
    data, train = cfg.data, cfg.train
    encoded = encode_pairs(tokenizer, pairs, data.max_prompt_tokens, data.max_response_tokens)
    key = None
    if cfg.adapter.init_from is None and lam is None:
        key = reference_key(model, encoded, train.batch_size, train.packing, train.pack_tokens)
        found = cached_reference(key)
        if found is not None:
            return found
    pad, size = tokenizer.pad_token_id, train.batch_size
    batches = [
        pair_batch(encoded[start : start + size], pad, train.packing, train.pack_tokens)
        for start in range(0, len(encoded), size)
    ]
    logprobs = pair_logprobs(model, batches, lam)
    if key is not None:
        keep_reference(key, logprobs)
    return logprobs
