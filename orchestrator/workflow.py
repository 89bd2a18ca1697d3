"""One Panacea run: base model → SVD-LoRA → pairs → training → adapter → front → report.

Everything a run writes lands in its run folder:
  config.yaml      the resolved configuration
  metrics.jsonl    one line per logged training step
  adapter/         the trained SVD-LoRA adapter (load_adapter)
  eval/            front.json, front.png, report.md
"""

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from orchestrator.algorithms.panacea import PanaceaTrainer, StepResult
from orchestrator.atomic import atomic_write_text
from orchestrator.config import RunConfig, load_config
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.encoding import encode_pairs
from orchestrator.data.sources import load_training_pairs
from orchestrator.errors import MoaError
from orchestrator.evaluation.front import Front, evaluate_base_point, evaluate_front
from orchestrator.evaluation.grid import simplex_grid
from orchestrator.evaluation.report import write_front
from orchestrator.model.adapter_io import load_adapter, save_adapter
from orchestrator.model.loading import load_model, load_tokenizer
from orchestrator.model.svd_lora import inject_svd_lora


@dataclass
class RunResult:
    run_dir: Path
    history: list[StepResult]
    front: Front | None
    base_point: np.ndarray | None
    train_seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: RunConfig):
    """(tokenizer, base model with a fresh SVD-LoRA adapter) as the config describes."""
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_model(cfg.model.name_or_path, cfg.model.dtype)
    inject_svd_lora(
        model,
        len(cfg.data.objectives),
        cfg.adapter.rank,
        cfg.adapter.alpha,
        cfg.adapter.target_modules,
        objective_names=cfg.data.objectives,
        init_std=cfg.adapter.init_std,
        seed=cfg.train.seed,
    )
    return tokenizer, model


def run_panacea(cfg: RunConfig, *, progress: bool = True) -> RunResult:
    seed_everything(cfg.train.seed)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    pairs = load_training_pairs(cfg.data)
    tokenizer, model = build_model(cfg)
    encoded = encode_pairs(
        tokenizer, pairs, cfg.data.max_prompt_tokens, cfg.data.max_response_tokens
    )
    trainer = PanaceaTrainer(model, encoded, tokenizer.pad_token_id, cfg.train)
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)

    def log(result: StepResult) -> None:
        if result.step % cfg.train.log_every == 0 or result.step == cfg.train.max_steps:
            with metrics_path.open("a") as handle:
                handle.write(json.dumps(result.as_dict()) + "\n")

    start = time.perf_counter()
    history = trainer.train(progress=progress, on_step=log)
    train_seconds = time.perf_counter() - start
    save_adapter(model, run_dir / "adapter")
    front = base_point = None
    if cfg.eval.enabled:
        front, base_point = evaluate_run(cfg, model, tokenizer, run_dir / "eval")
    return RunResult(run_dir, history, front, base_point, train_seconds)


def evaluate_run(cfg: RunConfig, model, tokenizer, out_dir: Path) -> tuple[Front, np.ndarray]:
    """The front over the λ grid and the base model's point, written to `out_dir`."""
    if cfg.data.source != "assistant":
        raise MoaError(
            "front evaluation needs the built-in task's scorers (data.source: assistant)"
        )
    task = AssistantTask(seed=cfg.data.seed)
    objectives = cfg.data.objectives
    prompts = task.prompts("test")[: cfg.eval.num_prompts]
    options = {"max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size}
    base_point = evaluate_base_point(model, tokenizer, task, objectives, prompts, **options)
    grid = simplex_grid(len(objectives), cfg.eval.grid_divisions)
    front = evaluate_front(
        model,
        tokenizer,
        task,
        objectives,
        grid,
        prompts,
        reference_point=cfg.eval.reference_point,
        **options,
    )
    write_front(out_dir, front, base_point=base_point, title="Panacea front (held-out prompts)")
    return front, base_point


def load_run(run_dir: str | Path) -> tuple[RunConfig, object, object]:
    """(config, tokenizer, model with the run's trained adapter) of a finished run."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise MoaError(f"{run_dir} is not a run folder: config.yaml is missing")
    cfg = load_config(run_dir / "config.yaml")
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_model(cfg.model.name_or_path, cfg.model.dtype)
    load_adapter(model, run_dir / "adapter")
    return cfg, tokenizer, model
