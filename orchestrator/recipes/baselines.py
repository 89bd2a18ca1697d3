"""The baselines users compare a steerable model against, each a set of ordinary fixed-λ models
trained by the same Ray Train trainer (ALGORITHMS.md §4):

  DPO experts   one model per objective: DPO on its labels alone (train.objective)
  DPO soups     the experts' weight updates interpolated by λ (algorithms/soups.py); no training
  DPS           one model per λ of the grid: the aggregated loss at that fixed λ
  MODPO         one model per λ: DPO on the main objective with the others' expert rewards as
                a margin (algorithms/modpo.py)

At a vertex e_i, DPS and MODPO are the expert of objective i, which is reused, not trained again.
Each model lands in its own folder through train_into, so a stopped comparison resumes.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from orchestrator.algorithms.modpo import main_objective, modpo_beta, modpo_margins
from orchestrator.atomic import atomic_torch_save
from orchestrator.config import RunConfig, with_fields
from orchestrator.data.schema import PairDataset
from orchestrator.distributed.logprobs import frozen_logprobs
from orchestrator.recipes.run_folder import train_into

Key = tuple[float, ...]


@dataclass
class TrainedModel:
    adapter: Path
    preference: Key  # the λ it was trained at (and runs at)
    seconds: float  # its training's wall time, margins included


def folder_name(lam: Key) -> str:
    return "lambda_" + "_".join(f"{x:.3f}" for x in lam)


def model_config(cfg: RunConfig, out_dir: Path, fields: dict[str, Any]) -> RunConfig:
    """One model of a multi-model method (an expert, a DPS or MODPO model, an SPO stage): `cfg`
    with these dotted fields, trained into `out_dir`, without evaluation of its own."""
    return with_fields(
        cfg, {**fields, "eval.enabled": False, "eval.every": 0, "output_dir": str(out_dir)}
    )


def expert_config(
    cfg: RunConfig, objective: str, out_dir: Path, beta: float | None = None
) -> RunConfig:
    """DPO on one objective's labels, the adapter at its vertex (also SPO's first stage)."""
    fields = {"train.objective": objective, "train.preference": None}
    return model_config(cfg, out_dir, fields | ({} if beta is None else {"train.beta": beta}))


def train_experts(
    cfg: RunConfig, pairs: PairDataset, root: Path, progress: bool = True
) -> dict[str, TrainedModel]:
    experts = {}
    for objective in cfg.data.objectives:
        config = expert_config(cfg, objective, root / objective)
        adapter, seconds = train_into(config, pairs, progress=progress)
        experts[objective] = TrainedModel(adapter, tuple(cfg.vertex(objective)), seconds)
    return experts


def _one_per_preference(
    cfg: RunConfig,
    grid: list[Key],
    experts: dict[str, TrainedModel],
    train_one: Callable[[Key], TrainedModel],
) -> dict[Key, TrainedModel]:
    """A model per λ of the grid: the expert at a vertex, `train_one(λ)` elsewhere."""
    return {
        lam: experts[cfg.data.objectives[lam.index(1.0)]] if max(lam) == 1.0 else train_one(lam)
        for lam in grid
    }


def train_dps(
    cfg: RunConfig,
    pairs: PairDataset,
    root: Path,
    grid: list[Key],
    experts: dict[str, TrainedModel],
    progress: bool = True,
) -> dict[Key, TrainedModel]:
    """One model per λ of the grid, trained on the aggregated loss at that λ."""

    def train_one(lam: Key) -> TrainedModel:
        config = model_config(cfg, root / folder_name(lam), {"train.preference": list(lam)})
        adapter, seconds = train_into(config, pairs, progress=progress)
        return TrainedModel(adapter, lam, seconds)

    return _one_per_preference(cfg, grid, experts, train_one)


def train_modpo(
    cfg: RunConfig,
    pairs: PairDataset,
    root: Path,
    grid: list[Key],
    experts: dict[str, TrainedModel],
    progress: bool = True,
) -> tuple[dict[Key, TrainedModel], float]:
    """(one MODPO model per λ of the grid, seconds spent on the margins). The margins come from
    the experts' implicit rewards β·(log π_j − log π_ref), computed once per dataset."""
    rewards, reward_seconds = expert_rewards(cfg, pairs, root / "rewards.pt", experts)
    signs = torch.tensor([pair.signs(cfg.data.objectives) for pair in pairs])

    def train_one(lam: Key) -> TrainedModel:
        weights = list(lam)
        fields = {
            "train.objective": cfg.data.objectives[main_objective(weights)],
            "train.preference": weights,
            "train.beta": modpo_beta(cfg.train.beta, weights),
        }
        config = model_config(cfg, root / folder_name(lam), fields)
        margins = modpo_margins(rewards, signs, weights)
        adapter, seconds = train_into(config, pairs, margins=margins, progress=progress)
        return TrainedModel(adapter, lam, seconds)

    return _one_per_preference(cfg, grid, experts, train_one), reward_seconds


def expert_rewards(
    cfg: RunConfig, pairs: PairDataset, path: Path, experts: dict[str, TrainedModel]
) -> tuple[torch.Tensor, float]:
    """([N, 2, m] each expert's implicit reward of each pair's responses, seconds), kept at
    `path` once computed."""
    if not path.is_file():
        start = time.perf_counter()
        models = [(None, None)] + [(e.adapter, list(e.preference)) for e in experts.values()]
        reference, *each = frozen_logprobs(cfg, pairs, models)
        rewards = torch.stack([cfg.train.beta * (logps - reference) for logps in each], dim=-1)
        atomic_torch_save(path, {"rewards": rewards, "seconds": time.perf_counter() - start})
    saved = torch.load(path)
    return saved["rewards"], saved["seconds"]
