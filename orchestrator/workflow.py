"""One Panacea run: base model → SVD-LoRA → pairs → training → adapter → front → report.

Everything a run writes lands in its run folder:
  config.yaml      the resolved configuration
  metrics.jsonl    one line per logged training step
  tensorboard/     the same metrics as TensorBoard events
  checkpoints/     Ray Train's checkpoints (the last checkpoint.keep), for resuming
  train.json       the training's wall time, written last (train_model: the model is done)
  best/            the adapter with the highest in-training hypervolume, and best.json
  adapter/         the trained SVD-LoRA adapter (load_adapter)
  eval/            front.json, front.png, report.md
"""

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from orchestrator.atomic import atomic_write_text
from orchestrator.config import RunConfig, build_config, load_config
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.sources import load_training_pairs
from orchestrator.errors import MoaError
from orchestrator.evaluation.front import Front, evaluate_base_point, evaluate_front
from orchestrator.evaluation.grid import simplex_grid
from orchestrator.evaluation.report import write_front
from orchestrator.metrics_log import read_metrics
from orchestrator.model.adapter_io import load_adapter, read_adapter_config
from orchestrator.model.generate import SamplingParams
from orchestrator.model.loading import load_model, load_tokenizer, resolve_model_path
from orchestrator.model.svd_lora import inject_svd_lora

RUN_OUTPUTS = (
    "config.yaml",
    "metrics.jsonl",
    "adapter",
    "eval",
    "best",
    "checkpoints",
    "tensorboard",
    "train.json",
)


@dataclass
class RunResult:
    run_dir: Path
    model: torch.nn.Module  # the base model with the trained adapter
    tokenizer: object
    history: list[dict]  # the logged steps (metrics.jsonl)
    front: Front | None  # None when eval.enabled is false
    train_seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: RunConfig, device: str | None = None):
    """(tokenizer, base model with a fresh SVD-LoRA adapter) as the config describes."""
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_model(cfg.model.name_or_path, cfg.model.dtype, device or cfg.model.device)
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
    if cfg.adapter.init_from is not None:
        load_adapter(model, cfg.adapter.init_from)
    return tokenizer, model


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """A folder that already holds a run is only reused with `overwrite`."""
    if (run_dir / "config.yaml").exists() and not overwrite:
        raise MoaError(
            f"output_dir {run_dir} already holds a run; choose another output_dir "
            "or pass --overwrite to replace it"
        )


def claim_output_dir(cfg: RunConfig, overwrite: bool, kind: str) -> Path:
    """cfg.output_dir for a run of several models (a comparison, a sweep) that resumes when
    started again: a folder with this config is kept, one with another is replaced only with
    `overwrite`. Call it after every check, so that nothing is removed for a run that fails."""
    out = Path(cfg.output_dir)
    saved = out / "config.yaml"
    if saved.is_file() and load_config(saved) != cfg:
        if not overwrite:
            raise MoaError(
                f"{out} holds a {kind} with another config; run it with that config to finish "
                "it, choose another output_dir, or pass --overwrite to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    return out


def prepare_run_dir(cfg: RunConfig, outputs: tuple[str, ...] = ()) -> Path:
    """The run folder with the resolved config written first. An earlier run's results go
    first (RUN_OUTPUTS and a workflow's own `outputs`, glob patterns), so an adapter never sits
    next to a config it was not trained with."""
    run_dir = Path(cfg.output_dir)
    for pattern in (*RUN_OUTPUTS, *outputs):
        for path in run_dir.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    return run_dir


def run_panacea(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False) -> RunResult:
    """Train through Ray Train (a local Ray instance unless one is running or RAY_ADDRESS names
    a cluster), then evaluate the front on the driver."""
    from orchestrator.distributed.train import train

    check_run_dir(Path(cfg.output_dir), overwrite)
    pairs = check_training_inputs(cfg)
    run_dir = prepare_run_dir(cfg)
    return _finish(cfg, run_dir, train(cfg, run_dir, pairs, progress=progress))


def train_model(
    cfg: RunConfig,
    pairs,
    *,
    margins: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    progress: bool = True,
    callbacks: list | None = None,
) -> tuple[Path, float]:
    """(adapter, training seconds) of the model `cfg` describes, trained into cfg.output_dir
    unless it is there already: a finished folder (train.json) is reused, a stopped one continues
    from its last checkpoint. A folder that holds another config is refused, not mixed.
    `margins`, `reference` and `callbacks` go to `distributed.train.train`."""
    from orchestrator.distributed.train import train

    run_dir = Path(cfg.output_dir)
    record = run_dir / "train.json"
    if (run_dir / "config.yaml").is_file():
        if load_config(run_dir / "config.yaml") != cfg:
            raise MoaError(
                f"{run_dir} holds a run with another config; remove it or choose another folder"
            )
        if record.is_file():
            return run_dir / "adapter", json.loads(record.read_text())["train_seconds"]
    else:
        prepare_run_dir(cfg)
    seconds = train(
        cfg,
        run_dir,
        pairs,
        progress=progress,
        margins=margins,
        reference=reference,
        callbacks=callbacks,
    )
    atomic_write_text(record, json.dumps({"train_seconds": seconds}))
    return run_dir / "adapter", seconds


def derived_config(cfg: RunConfig, output_dir: Path, **train: object) -> RunConfig:
    """`cfg` with these train.* fields, trained into `output_dir`, without evaluation: one model
    of a multi-model method (an SPO stage, an expert, a DPS or MODPO model). `init_from` sets
    adapter.init_from."""
    data = cfg.model_dump()
    data["adapter"]["init_from"] = train.pop("init_from", cfg.adapter.init_from)
    data["train"].update(train)
    data["eval"].update(enabled=False, every=0)
    data["output_dir"] = str(output_dir)
    return build_config(data)


def resume_panacea(run_dir: str | Path, *, progress: bool = True) -> RunResult:
    """Continue a stopped run from its latest checkpoint, with the config it was started with."""
    from orchestrator.distributed.train import train

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    pairs = check_training_inputs(cfg)
    return _finish(cfg, run_dir, train(cfg, run_dir, pairs, progress=progress))


def read_run_config(run_dir: Path, overrides: list[str] = ()) -> RunConfig:
    """The config a run folder was started with (config.yaml), with `overrides` applied."""
    if not (run_dir / "config.yaml").is_file():
        raise MoaError(f"{run_dir} is not a run folder: config.yaml is missing")
    return load_config(run_dir / "config.yaml", overrides)


def check_training_inputs(cfg: RunConfig):
    """The training pairs, loaded before any worker starts: a dataset that lacks an objective,
    a missing file or a model that cannot be found fails here, with the field named."""
    try:
        pairs = load_training_pairs(cfg.data)
    except MoaError as err:
        raise MoaError(f"data: {err}") from None
    if len(pairs.pairs) < cfg.global_batch:
        raise MoaError(
            f"data: {len(pairs.pairs)} training pairs, fewer than one global batch of "
            f"{cfg.global_batch} (train.batch_size × scaling.num_workers × train.grad_accum_steps)"
        )
    try:  # also builds the built-in base once, on the driver
        load_tokenizer(cfg.model.name_or_path)
    except MoaError as err:
        raise MoaError(f"model.name_or_path: {err}") from None
    if cfg.adapter.init_from is not None:
        check_initial_adapter(cfg)
    return pairs


def check_initial_adapter(cfg: RunConfig) -> None:
    """adapter.init_from must be an adapter of this run's shape."""
    try:
        saved = read_adapter_config(cfg.adapter.init_from)
    except MoaError as err:
        raise MoaError(f"adapter.init_from: {err}") from None
    expected = {
        "num_objectives": len(cfg.data.objectives),
        "rank": cfg.adapter.rank,
        "alpha": cfg.adapter.alpha,
    }
    for field, value in expected.items():
        if getattr(saved, field) != value:
            raise MoaError(
                f"adapter.init_from: the adapter at {cfg.adapter.init_from} has "
                f"{field}={getattr(saved, field)!r}; this run needs {value!r}"
            )


def _finish(cfg: RunConfig, run_dir: Path, train_seconds: float) -> RunResult:
    _, tokenizer, model = load_run(run_dir)
    front = None
    if cfg.eval.enabled:
        front = evaluate_with_pool(cfg, model, tokenizer, run_dir / "eval")
    return RunResult(run_dir, model, tokenizer, read_metrics(run_dir), front, train_seconds)


def evaluate_with_pool(cfg: RunConfig, model, tokenizer, out_dir: Path) -> Front:
    """evaluate_run with the grid's answers from a generation pool (`generation.*`) on Ray."""
    from orchestrator.distributed.generation import pool_for
    from orchestrator.distributed.train import ensure_ray

    ensure_ray()
    path = resolve_model_path(cfg.model.name_or_path)
    options = {"max_prompt_tokens": cfg.data.max_prompt_tokens}
    with pool_for(model, path, cfg.model.dtype, cfg.generation, **options) as pool:
        return evaluate_run(cfg, model, tokenizer, out_dir, answer=pool.answerer())


def evaluate_run(cfg: RunConfig, model, tokenizer, out_dir: Path, answer=None) -> Front:
    """The front over the λ grid, with the base model's point, written to `out_dir`.
    `answer`: where the grid is generated (default: `model`, here; see evaluate_front)."""
    front = evaluate_on_grid(
        cfg, model, tokenizer, cfg.eval.grid_divisions, cfg.eval.num_prompts, answer=answer
    )
    write_front(out_dir, front, title="Panacea front (held-out prompts)")
    return front


def evaluate_on_grid(
    cfg: RunConfig,
    model,
    tokenizer,
    divisions: int,
    num_prompts: int,
    with_base: bool = True,
    answer=None,
) -> Front:
    """The front over the λ grid of `divisions`, on the first `num_prompts` held-out prompts."""
    if cfg.data.source != "assistant":
        raise MoaError(
            f"front evaluation needs the built-in task's scorers; this run trained on "
            f"data.source={cfg.data.source!r}"
        )
    task = AssistantTask(seed=cfg.data.seed)
    objectives = cfg.data.objectives
    prompts = task.prompts("test")[:num_prompts]
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
    grid = simplex_grid(len(objectives), divisions, dtype=torch.float64)
    front = evaluate_front(
        model,
        tokenizer,
        task,
        objectives,
        grid,
        prompts,
        reference_point=cfg.eval.reference_point,
        answer=answer,
        **options,
    )
    if with_base:
        front.base_point = evaluate_base_point(
            model, tokenizer, task, objectives, prompts, **options
        )
    return front


def load_run(run_dir: str | Path, overrides: list[str] = ()) -> tuple[RunConfig, object, object]:
    """(config, tokenizer, model with the run's trained adapter) of a finished run."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, overrides)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_model(cfg.model.name_or_path, cfg.model.dtype, cfg.model.device)
    load_adapter(model, run_dir / "adapter")
    return cfg, tokenizer, model
