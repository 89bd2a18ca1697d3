"""`moa train`: one Panacea run. Base model → SVD-LoRA → pairs → Ray Train → adapter → front.

Everything a run writes lands in its run folder:
  config.yaml      the resolved configuration
  metrics.jsonl    one line per logged training step
  tensorboard/     the same metrics as TensorBoard events
  checkpoints/     Ray Train's checkpoints (the last checkpoint.keep), for resuming
  logs/            what each Ray Train worker printed (rank_N.log)
  best/            the adapter with the highest in-training hypervolume, and best.json
  adapter/         the trained SVD-LoRA adapter (load_adapter)
  train.json       the training's wall time, written once the model is done
  eval/            front.json, front.png, report.md
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from orchestrator.config import RunConfig
from orchestrator.data.schema import PairDataset
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.report import read_front
from orchestrator.recipes.evaluate import PANACEA_TITLE, front_on_pool
from orchestrator.recipes.inputs import check_training_inputs
from orchestrator.recipes.run_folder import (
    TRAINING_RUN,
    load_trained,
    open_run,
    start_run,
    train_into,
)
from orchestrator.training.metrics_log import read_metrics


@dataclass
class RunResult:
    run_dir: Path
    model: torch.nn.Module  # the base model with the trained adapter
    tokenizer: object
    history: list[dict]  # the logged steps (metrics.jsonl)
    front: Front | None  # None when eval.enabled is false
    train_seconds: float


def run_panacea(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False) -> RunResult:
    """Train through Ray Train (a local Ray instance unless one is running or RAY_ADDRESS names
    a cluster), then evaluate the front with a generation pool."""
    pairs = check_training_inputs(cfg)
    start_run(cfg, TRAINING_RUN, overwrite)
    return ensure_panacea(cfg, pairs, progress=progress)


def resume_panacea(run_dir: str | Path, *, progress: bool = True) -> RunResult:
    """Continue a stopped run from its latest checkpoint, with the config it was started with."""
    cfg = open_run(run_dir)
    return ensure_panacea(cfg, check_training_inputs(cfg), progress=progress)


def ensure_panacea(cfg: RunConfig, pairs: PairDataset, *, progress: bool = True) -> RunResult:
    """The Panacea run `cfg` describes in cfg.output_dir, trained and evaluated unless it is
    there already: a stopped run continues, a finished one is read back (SIPO's start)."""
    _, seconds = train_into(cfg, pairs, progress=progress)
    run_dir = Path(cfg.output_dir)
    _, tokenizer, model = load_trained(run_dir)
    front = None
    if cfg.eval.enabled:
        saved = run_dir / "eval" / "front.json"
        if saved.is_file():
            front = read_front(saved)
        else:
            front = front_on_pool(cfg, model, tokenizer, run_dir / "eval", PANACEA_TITLE)
    return RunResult(run_dir, model, tokenizer, read_metrics(run_dir), front, seconds)
