"""Panacea training on Ray Train: a TorchTrainer whose workers each run the trainer's step on
their share of every global batch, with checkpoints, restarts and evaluation during training.

Ray keeps the run's checkpoints in RUN_DIR/checkpoints (the last `checkpoint.keep`); a worker
group that fails is restarted from the latest one (`checkpoint.max_failures`), and a stopped run
started again on the same folder continues from it. RUN_DIR must be visible from every node.
"""

import json
import os
import tempfile
import time
from pathlib import Path

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from orchestrator.algorithms.panacea import PanaceaTrainer
from orchestrator.atomic import atomic_directory
from orchestrator.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.config import RunConfig
from orchestrator.data.encoding import encode_pairs
from orchestrator.data.schema import PairDataset
from orchestrator.engine import build_engine
from orchestrator.errors import MoaError
from orchestrator.metrics_log import MetricsLogger
from orchestrator.model.adapter_io import save_adapter
from orchestrator.model.loading import resolve_model_path

CHECKPOINTS = "checkpoints"
BEST = "best"
FAULT_ENV = "MOA_FAULT_AT_STEP"  # "STEP[:RANK]": that rank fails once before STEP (tests)


def train(
    cfg: RunConfig,
    run_dir: Path,
    pairs: PairDataset,
    progress: bool = True,
    margins: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    callbacks: list | None = None,
) -> float:
    """Run (or continue) the training of `run_dir` on Ray Train; returns the wall time in
    seconds. The final adapter is written to RUN_DIR/adapter. Precomputed by the caller:
    `margins` [pairs, objectives], per-pair DPO margins (MODPO, SPO); `reference` [pairs, 2],
    the DPO anchor's log-probs of each pair's responses (then the workers skip that pass).
    `callbacks`: Ray Train callbacks (a sweep's trial passes Tune's report callback)."""
    ensure_ray()
    scaling = cfg.scaling
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "config": worker_config(cfg),
            "run_dir": str(run_dir.resolve()),
            "pairs": pairs,
            "margins": margins,
            "reference": reference,
            "progress": progress,
            "fault": os.environ.get(FAULT_ENV),
        },
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker, "GPU": int(scaling.use_gpu)},
        ),
        run_config=ray.train.RunConfig(
            name=CHECKPOINTS,
            storage_path=str(run_dir.resolve()),
            failure_config=FailureConfig(max_failures=cfg.checkpoint.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
            callbacks=callbacks,
        ),
    )
    start = time.perf_counter()
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise MoaError(
            f"training failed: {err}\nthe run folder keeps its checkpoints; continue with "
            f"`moa train --resume {run_dir}`"
        ) from None
    return time.perf_counter() - start


def worker_config(cfg: RunConfig) -> dict:
    """The config as the workers get it: local paths made absolute, since Ray's workers do not
    run in the driver's working directory."""
    data = cfg.model_dump()
    data["model"]["name_or_path"] = resolve_model_path(cfg.model.name_or_path)
    if cfg.adapter.init_from is not None:
        data["adapter"]["init_from"] = str(Path(cfg.adapter.init_from).resolve())
    return data


def ensure_ray() -> None:
    """Connect to the cluster RAY_ADDRESS names (set by `ray job submit`), else start a local
    instance; token authentication stays on. A local instance gets the dashboard, on 127.0.0.1:
    Ray Train removes the worker group of a run whose controller was killed (a trial ASHA stops)
    only after asking the dashboard's State API that the controller is dead."""
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        address = os.environ.get("RAY_ADDRESS")
        local = {} if address else {"include_dashboard": True, "dashboard_host": "127.0.0.1"}
        ray.init(address=address, **local)


def train_loop(config: dict) -> None:
    """One Ray Train worker."""
    import transformers

    from orchestrator.workflow import build_model, seed_everything

    transformers.utils.logging.disable_progress_bar()
    cfg = RunConfig.model_validate(config["config"])
    run_dir = Path(config["run_dir"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    seed_everything(cfg.train.seed)
    device = ray.train.torch.get_device() if cfg.scaling.use_gpu else "cpu"
    tokenizer, model = build_model(cfg, device=str(device))
    encoded = encode_pairs(
        tokenizer, config["pairs"], cfg.data.max_prompt_tokens, cfg.data.max_response_tokens
    )
    engine = build_engine(model, cfg.train, cfg.scaling.strategy, cfg.scaling.deepspeed)
    objective = cfg.train.objective
    trainer = PanaceaTrainer(
        model,
        encoded,
        tokenizer.pad_token_id,
        cfg.train,
        engine,
        preference=cfg.fixed_preference,
        objective=None if objective is None else cfg.data.objectives.index(objective),
        margins=config["margins"],
        reference=config["reference"],
    )
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            load_checkpoint(Path(directory), trainer)
    trainer.prepare(progress=config["progress"] and rank == 0)
    evaluating = rank == 0 and cfg.eval.enabled and cfg.eval.every > 0
    evaluator = Evaluator(cfg, model, tokenizer, run_dir) if evaluating else None
    logger = None
    if rank == 0:
        logger = MetricsLogger(run_dir, cfg.logging, cfg.model_dump(), resume_step=trainer.step)
    bar = _progress_bar(cfg, trainer.step) if config["progress"] and rank == 0 else None
    while trainer.step < cfg.train.max_steps:
        _maybe_fail(config["fault"], trainer.step, rank, context.get_world_size(), run_dir)
        metrics = trainer.train_step().as_dict()
        step, last = trainer.step, trainer.step == cfg.train.max_steps
        metrics["epoch"], metrics["position"] = trainer.epoch_and_position
        if evaluator is not None and (step % cfg.eval.every == 0 or last):
            metrics.update(evaluator.evaluate(step))
        if logger is not None and (step % cfg.train.log_every == 0 or last):
            logger.log(metrics)
        if bar is not None:
            bar.update(1)
        if step % cfg.checkpoint.every == 0 or last:
            _report_checkpoint(trainer, metrics)
    with engine.full_parameters():
        if rank == 0:
            save_adapter(model, run_dir / "adapter")
    if logger is not None:
        logger.close()
    if bar is not None:
        bar.close()


def _report_checkpoint(trainer: PanaceaTrainer, metrics: dict) -> None:
    """Every rank writes its part into a local folder; Ray Train gathers the parts into one
    checkpoint in RUN_DIR/checkpoints and registers it once all ranks are done."""
    with tempfile.TemporaryDirectory(prefix="moa-checkpoint-") as directory:
        save_checkpoint(Path(directory), trainer, metrics)
        has_files = any(Path(directory).iterdir())
        ray.train.report(
            metrics,
            checkpoint=Checkpoint.from_directory(directory) if has_files else None,
            checkpoint_dir_name=f"checkpoint_{trainer.step:06d}",
        )


class Evaluator:
    """The hypervolume over a coarse λ grid during training (rank 0); the best adapter so far
    is kept in RUN_DIR/best with best.json."""

    def __init__(self, cfg: RunConfig, model, tokenizer, run_dir: Path):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.best_dir = run_dir / BEST
        best = self.best_dir / "best.json"
        self.best = json.loads(best.read_text())["hypervolume"] if best.is_file() else float("-inf")

    def evaluate(self, step: int) -> dict:
        from orchestrator.workflow import evaluate_on_grid

        start = time.perf_counter()
        cfg = self.cfg.eval
        front = evaluate_on_grid(
            self.cfg,
            self.model,
            self.tokenizer,
            cfg.coarse_grid_divisions,
            cfg.coarse_num_prompts,
            with_base=False,
        )
        metrics = front.metrics()
        hypervolume = metrics["hypervolume"]
        if hypervolume > self.best:
            self.best = hypervolume
            with atomic_directory(self.best_dir) as tmp:
                save_adapter(self.model, tmp / "adapter")
                (tmp / "best.json").write_text(json.dumps({"step": step, **metrics}, indent=2))
        return {
            "hypervolume": hypervolume,
            "inner_product": metrics["inner_product"],
            "eval_seconds": time.perf_counter() - start,
        }


def _progress_bar(cfg: RunConfig, initial: int):
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(total=cfg.train.max_steps, desc="panacea")
    bar.update(initial)
    return bar


def _maybe_fail(fault: str | None, step: int, rank: int, world_size: int, run_dir: Path) -> None:
    """Fault injection for tests: FAULT_ENV="STEP[:RANK]" makes that rank (default: the last)
    raise once, before the step that would make `step` STEP."""
    if not fault:
        return
    at, _, which = fault.partition(":")
    marker = run_dir / f".fault-injected-{at}"
    if step + 1 == int(at) and rank == int(which or world_size - 1) and not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected fault on rank {rank} before step {at} ({FAULT_ENV})")
