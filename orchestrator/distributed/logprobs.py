"""Summed response log-probs of every training pair under frozen models, as one Ray task.

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
from orchestrator.model.adapter_io import load_adapter
from orchestrator.model.build import build_model
from orchestrator.training.reference_cache import cached_reference, keep_reference, reference_key

# A frozen model: π_ref (no adapter), or a trained adapter at the λ it runs at.
Frozen = tuple[Path | None, list[float] | None]


def frozen_logprobs(cfg: RunConfig, pairs: PairDataset, models: list[Frozen]) -> torch.Tensor:
    """[models, N, 2] log-probs of each pair's responses (a, b) under each model: π_ref when its
    adapter is None, else that adapter at its λ. One task for all of them: the base model is
    loaded and the pairs encoded and batched once, each adapter loaded in turn."""
    ensure_ray()
    models = [(None if a is None else Path(a).resolve(), lam) for a, lam in models]
    task = ray.remote(_frozen_logprobs).options(
        num_cpus=cfg.scaling.cpus_per_worker, num_gpus=int(cfg.scaling.use_gpu)
    )
    base = with_fields(cfg, {"adapter.init_from": None})
    return ray.get(task.remote(for_workers(base), pairs, models))


def _frozen_logprobs(cfg: RunConfig, pairs: PairDataset, models: list[Frozen]) -> torch.Tensor:
    """π_ref's come from the reference cache when a training run or an earlier task on the
    same pairs and model has computed them, batched as training batches them."""
    tokenizer, model = build_model(cfg, device="cuda" if cfg.scaling.use_gpu else "cpu")
    data, train = cfg.data, cfg.train
    encoded = encode_pairs(tokenizer, pairs, data.max_prompt_tokens, data.max_response_tokens)
    pad, size = tokenizer.pad_token_id, train.batch_size
    batches = [
        pair_batch(encoded[start : start + size], pad, train.packing, train.pack_tokens)
        for start in range(0, len(encoded), size)
    ]
    key = None  # hashing the base model is for π_ref only
    if any(adapter is None for adapter, _ in models):
        key = reference_key(model, encoded, train.batch_size, train.packing, train.pack_tokens)
    results = []
    for adapter, lam in models:
        if adapter is None:
            found = cached_reference(key)
            if found is None:
                found = pair_logprobs(model, batches)
                keep_reference(key, found)
            results.append(found)
        else:
            load_adapter(model, adapter)
            results.append(pair_logprobs(model, batches, lam))
    return torch.stack(results)
