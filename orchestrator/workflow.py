"""One Panacea run: base model → SVD-LoRA → pairs → training → adapter → front → report.

Everything a run writes lands in its run folder:
  config.yaml      the resolved configuration
  metrics.jsonl    one line per logged training step
  adapter/         the trained SVD-LoRA adapter (load_adapter)
  eval/            front.json, front.png, report.md
"""

import json
import random
import shutil
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
from orchestrator.model.generate import SamplingParams
from orchestrator.model.loading import load_model, load_tokenizer
from orchestrator.model.svd_lora import inject_svd_lora

RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", "adapter", "eval")


@dataclass
class RunResult:
    run_dir: Path
    model: torch.nn.Module  # the base model with the trained adapter
    tokenizer: object
    history: list[StepResult]
    front: Front | None  # None when eval.enabled is false
    train_seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: RunConfig):
    """(tokenizer, base model with a fresh SVD-LoRA adapter) as the config describes."""
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_model(cfg.model.name_or_path, cfg.model.dtype, cfg.model.device)
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


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """A folder that already holds a run is only reused with `overwrite`."""
    if (run_dir / "config.yaml").exists() and not overwrite:
        raise MoaError(
            f"output_dir {run_dir} already holds a run; choose another output_dir "
            "or pass --overwrite to replace it"
        )


def prepare_run_dir(cfg: RunConfig) -> Path:
    """The run folder with the resolved config written first. An earlier run's results go
    first, so an adapter never sits next to a config it was not trained with."""
    run_dir = Path(cfg.output_dir)
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    return run_dir


def run_panacea(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False) -> RunResult:
    check_run_dir(Path(cfg.output_dir), overwrite)
    seed_everything(cfg.train.seed)
    pairs = load_training_pairs(cfg.data)
    tokenizer, model = build_model(cfg)
    encoded = encode_pairs(
        tokenizer, pairs, cfg.data.max_prompt_tokens, cfg.data.max_response_tokens
    )
    trainer = PanaceaTrainer(model, encoded, tokenizer.pad_token_id, cfg.train)
    run_dir = prepare_run_dir(cfg)
    metrics_path = run_dir / "metrics.jsonl"

    def log(result: StepResult) -> None:
        if result.step % cfg.train.log_every == 0 or result.step == cfg.train.max_steps:
            with metrics_path.open("a") as handle:
                handle.write(json.dumps(result.as_dict()) + "\n")

    start = time.perf_counter()
    history = trainer.train(progress=progress, on_step=log)
    train_seconds = time.perf_counter() - start
    save_adapter(model, run_dir / "adapter")
    front = evaluate_run(cfg, model, tokenizer, run_dir / "eval") if cfg.eval.enabled else None
    return RunResult(run_dir, model, tokenizer, history, front, train_seconds)


def evaluate_run(cfg: RunConfig, model, tokenizer, out_dir: Path) -> Front:
    """The front over the λ grid, with the base model's point, written to `out_dir`."""
    if cfg.data.source != "assistant":
        raise MoaError(
            f"front evaluation needs the built-in task's scorers; this run trained on "
            f"data.source={cfg.data.source!r}"
        )
    task = AssistantTask(seed=cfg.data.seed)
    objectives = cfg.data.objectives
    prompts = task.prompts("test")[: cfg.eval.num_prompts]
    sampling = SamplingParams(
        max_new_tokens=cfg.eval.max_new_tokens,
        temperature=cfg.eval.temperature,
        top_p=cfg.eval.top_p,
        seed=cfg.eval.seed,
    )
    options = {
        "sampling": sampling,
        "answers_per_prompt": cfg.eval.answers_per_prompt,
        "max_prompt_tokens": cfg.data.max_prompt_tokens,
        "batch_size": cfg.eval.batch_size,
    }
    base_point = evaluate_base_point(model, tokenizer, task, objectives, prompts, **options)
    grid = simplex_grid(len(objectives), cfg.eval.grid_divisions, dtype=torch.float64)
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
    front.base_point = base_point
    write_front(out_dir, front, title="Panacea front (held-out prompts)")
    return front


def load_run(run_dir: str | Path, overrides: list[str] = ()) -> tuple[RunConfig, object, object]:
    """(config, tokenizer, model with the run's trained adapter) of a finished run."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise MoaError(f"{run_dir} is not a run folder: config.yaml is missing")
    cfg = load_config(run_dir / "config.yaml", overrides)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_model(cfg.model.name_or_path, cfg.model.dtype, cfg.model.device)
    load_adapter(model, run_dir / "adapter")
    return cfg, tokenizer, model
