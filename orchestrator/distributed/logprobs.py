"""Summed response log-probs of every training pair under one frozen model, as a Ray task.

SPO's and MODPO's margins are functions of frozen models (π_ref, earlier stages, experts), so
they are computed once per dataset, on a worker of the kind training uses, and kept on disk.
"""

from pathlib import Path

import ray
import torch

from orchestrator.config import RunConfig
from orchestrator.data.encoding import collate_pairs, encode_pairs
from orchestrator.data.schema import PairDataset
from orchestrator.distributed.train import ensure_ray, worker_config
from orchestrator.model.svd_lora import adapter_disabled, preference


def pair_logprobs(
    cfg: RunConfig, pairs: PairDataset, adapter: Path | None, lam: list[float] | None = None
) -> torch.Tensor:
    """[N, 2] log-probs of each pair's responses (a, b): under π_ref (the base model) when
    `adapter` is None, else under that adapter at λ."""
    ensure_ray()
    data = worker_config(cfg)
    data["adapter"]["init_from"] = None if adapter is None else str(Path(adapter).resolve())
    task = ray.remote(_pair_logprobs).options(
        num_cpus=cfg.scaling.cpus_per_worker, num_gpus=int(cfg.scaling.use_gpu)
    )
    return ray.get(task.remote(data, pairs, lam))


@torch.no_grad()
def _pair_logprobs(config: dict, pairs: PairDataset, lam: list[float] | None) -> torch.Tensor:
    from orchestrator.algorithms.panacea import policy_logprobs
    from orchestrator.workflow import build_model

    cfg = RunConfig.model_validate(config)
    tokenizer, model = build_model(cfg, device="cuda" if cfg.scaling.use_gpu else "cpu")
    model.eval()
    data = cfg.data
    encoded = encode_pairs(tokenizer, pairs, data.max_prompt_tokens, data.max_response_tokens)
    size = cfg.train.batch_size
    device = next(model.parameters()).device
    parts = []
    with adapter_disabled(model) if lam is None else preference(model, lam):
        for start in range(0, len(encoded), size):
            batch = collate_pairs(encoded[start : start + size], tokenizer.pad_token_id)
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            logp_a, logp_b, _, _ = policy_logprobs(model, batch)
            parts.append(torch.stack([logp_a, logp_b], dim=-1).cpu())
    return torch.cat(parts)
