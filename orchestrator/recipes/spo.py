"""`moa spo`: the objectives aligned one after another, stage k anchored on stage k−1
(ALGORITHMS.md §2, algorithms/spo.py).

Stage 1 is DPO on the first objective against π_ref. Stage k starts from stage k−1's adapter,
keeps a frozen copy of it as the DPO anchor (train.reference: initial; its log-probs are
precomputed once, since λ is fixed) and subtracts the earlier stages' implicit-reward margin.
The adapter runs at one fixed λ throughout, so each stage's model is a plain LoRA on the one base
model: no second copy of the base is loaded. Each stage is resumable from its own folder:

  RUN_DIR/config.yaml           the resolved configuration
  RUN_DIR/logprobs/stage_K.pt   every pair's response log-probs under π_K (π_0 = π_ref), the
                                margins' frozen inputs, computed once ({logprobs, seconds})
  RUN_DIR/stage_K/              stage K's Ray Train run (its objective: spo.order[K−1])
  RUN_DIR/adapter/              the last stage's adapter
  RUN_DIR/spo.json              per stage: objective, β, margin weight, seconds
  RUN_DIR/eval/                 its point on the λ grid (one model: the same at every λ)
"""

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from orchestrator.algorithms.spo import spo_margins
from orchestrator.atomic import atomic_directory, atomic_torch_save, atomic_write_text
from orchestrator.config import RunConfig
from orchestrator.data.schema import PairDataset
from orchestrator.distributed.logprobs import frozen_logprobs
from orchestrator.evaluation.answerers import grouped_answerer, one_model
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.report import write_front
from orchestrator.evaluation.run_front import evaluate_on_grid
from orchestrator.model.build import build_model
from orchestrator.recipes.baselines import expert_config, model_config
from orchestrator.recipes.inputs import check_training_inputs
from orchestrator.recipes.run_folder import (
    CONTINUED_RUN,
    TRAINING_RUN,
    RunKind,
    open_run,
    start_run,
    train_into,
)

SPO_RUN = RunKind(
    "SPO run",
    (*TRAINING_RUN.sections, "spo"),
    (*TRAINING_RUN.outputs, "stage_*", "logprobs", "spo.json"),
    command="spo",
    finished="spo.json",
)


@dataclass
class SPOResult:
    run_dir: Path
    stages: list[dict]
    front: Front | None
    train_seconds: float


def run_spo(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False) -> SPOResult:
    pairs = check_training_inputs(cfg)
    return _finish(cfg, start_run(cfg, SPO_RUN, overwrite), pairs, progress)


def resume_spo(run_dir: str | Path, *, progress: bool = True) -> SPOResult:
    """Continue a stopped SPO run at the stage it reached."""
    cfg = open_run(run_dir)
    return _finish(cfg, Path(run_dir), check_training_inputs(cfg), progress)


def _finish(cfg: RunConfig, run_dir: Path, pairs: PairDataset, progress: bool) -> SPOResult:
    stages = train_spo(cfg, pairs, run_dir, progress=progress)
    with atomic_directory(run_dir / "adapter") as tmp:
        shutil.copytree(stages[-1]["adapter"], tmp, dirs_exist_ok=True)
    atomic_write_text(run_dir / "spo.json", json.dumps(stages, indent=2))
    front = None
    if cfg.eval.enabled:
        tokenizer, model = build_model(cfg)
        setup = spo_setup(cfg, model, run_dir / "adapter")
        answer = grouped_answerer(model, tokenizer, setup, cfg)
        front = evaluate_on_grid(cfg, model, tokenizer, answer=answer)
        write_front(run_dir / "eval", front, title="SPO (one model, the same at every λ)")
    seconds = sum(stage["seconds"] for stage in stages)
    return SPOResult(run_dir, stages, front, seconds)


def train_spo(
    cfg: RunConfig,
    pairs: PairDataset,
    run_dir: Path,
    first_stage: Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train the stages into RUN_DIR/stage_K (stage 1 into `first_stage` when given: the DPO
    expert of the first objective, with this config, is SPO's stage 1). Per stage: objective,
    β, margin weight, adapter, seconds (its margins' log-probs included)."""
    spo, objectives, order = cfg.spo, cfg.data.objectives, cfg.spo_order
    betas = spo.betas or [cfg.train.beta] * len(order)
    weights = spo.margin_weights or [1.0] * (len(order) - 1)
    lam = cfg.vertex(order[0])
    signs = torch.tensor([pair.signs(objectives) for pair in pairs])
    logps: list[torch.Tensor] = []
    stages: list[dict] = []
    for k, objective in enumerate(order, start=1):
        margin_seconds, margins = 0.0, None
        if k == 1:
            out_dir = first_stage or run_dir / "stage_1"
            config = expert_config(cfg, objective, out_dir, beta=betas[0])
        else:
            previous = Path(stages[-1]["adapter"])
            # log π_0 (π_ref) before stage 2, then log π_{k−1}: also this stage's anchor.
            for index, adapter in ([(0, None)] if k == 2 else []) + [(k - 1, previous)]:
                stage_logps, seconds = _logprobs(cfg, pairs, run_dir, index, adapter, lam)
                logps.append(stage_logps)
                margin_seconds += seconds
            margins = spo_margins(logps, signs, objectives.index(objective), betas, weights)
            config = model_config(
                cfg,
                run_dir / f"stage_{k}",
                {
                    "train.objective": objective,
                    "train.preference": list(lam),
                    "train.beta": betas[k - 1],
                    "train.reference": "initial",
                    "adapter.init_from": str(previous),
                },
            )
        anchor = logps[-1] if k > 1 else None  # π_{k−1}'s log-probs: not computed again
        kind = CONTINUED_RUN if k > 1 else TRAINING_RUN  # stage k starts from stage k−1
        adapter, seconds = train_into(
            config, pairs, kind=kind, margins=margins, reference=anchor, progress=progress
        )
        stages.append(
            {
                "stage": k,
                "objective": objective,
                "beta": betas[k - 1],
                "margin_weight": weights[k - 1] if k < len(order) else None,
                "adapter": str(adapter),
                "seconds": seconds + margin_seconds,
            }
        )
    return stages


def _logprobs(
    cfg: RunConfig, pairs: PairDataset, run_dir: Path, index: int, adapter: Path | None, lam
) -> tuple[torch.Tensor, float]:
    """(log π_index of every pair's responses, the seconds they took), computed once and kept
    in RUN_DIR/logprobs."""
    path = run_dir / "logprobs" / f"stage_{index}.pt"
    if not path.is_file():
        start = time.perf_counter()
        [logps] = frozen_logprobs(cfg, pairs, [(adapter, None if adapter is None else list(lam))])
        atomic_torch_save(path, {"logprobs": logps, "seconds": time.perf_counter() - start})
    saved = torch.load(path)
    return saved["logprobs"], saved["seconds"]


def spo_setup(cfg: RunConfig, model, adapter: Path):
    """The SPO model answers every λ of a grid the same way: at the λ it was trained at."""
    return one_model(model, adapter, tuple(cfg.vertex(cfg.spo_order[0])))
