"""A training run on Ray Train: a TorchTrainer whose workers each run one rank of the run
(training/loop.py) on their share of every global batch.

Ray keeps the run's checkpoints in RUN_DIR/checkpoints (the last `checkpoint.keep`); a worker
group that fails is restarted from the latest one (`checkpoint.max_failures`), and a stopped run
started again on the same folder continues from it. RUN_DIR must be visible from every node.
"""

import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from orchestrator.config import RunConfig
from orchestrator.data.schema import PairDataset
from orchestrator.distributed.cluster import ensure_ray, for_workers
from orchestrator.errors import MoaError
from orchestrator.training.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.training.loop import Launch, train_rank
from orchestrator.training.progress import RunProgress
from orchestrator.training.trainer import MultiObjectiveTrainer

CHECKPOINTS = "checkpoints"
LOGS = "logs"  # RUN_DIR/logs/rank_N.log: what each worker printed
FAULT_ENV = "MOA_FAULT_AT_STEP"  # "STEP[:RANK],...": that rank fails once before STEP (tests)


def train(
    cfg: RunConfig,
    run_dir: Path,
    pairs: PairDataset,
    progress: bool = True,
    margins: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    callbacks: list | None = None,
    rank_loop: Callable = train_rank,
    command: str = "train",
) -> float:
    """Run (or continue) the training of `run_dir` on Ray Train; returns the wall time in
    seconds. The final adapter is written to RUN_DIR/adapter. Precomputed by the caller:
    `margins` [pairs, objectives], per-pair DPO margins (MODPO, SPO); `reference` [pairs, 2],
    the DPO anchor's log-probs of each pair's responses (then the workers skip that pass).
    `callbacks`: Ray Train callbacks (a sweep's trial passes Tune's report callback).
    `rank_loop`: what each worker runs, training.loop's train_rank (a policy) or
    train_reward_rank (reward models, which take no margins or reference); `command`: the moa
    command whose --resume continues the run, for the message when it fails."""
    ensure_ray()
    scaling = cfg.scaling
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "config": for_workers(cfg),
            "run_dir": str(run_dir.resolve()),
            "pairs": pairs,
            "rank_loop": rank_loop,
            "tensors": {
                name: tensor
                for name, tensor in (("margins", margins), ("reference", reference))
                if tensor is not None
            },
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
    shown = RunProgress(run_dir, cfg.train.max_steps) if progress else contextlib.nullcontext()
    try:
        with shown:
            trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise MoaError(
            f"training failed: {err}\nthe workers' output is in {run_dir / LOGS}; the run "
            f"folder keeps its checkpoints: continue with `moa {command} --resume {run_dir}`"
        ) from None
    return time.perf_counter() - start


def train_worker(config: dict) -> None:
    """One Ray Train worker: a rank of the run, continuing from Ray's latest checkpoint; what it
    prints goes to RUN_DIR/logs/rank_N.log."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    context = ray.train.get_context()
    rank = context.get_world_rank()
    with output_to(Path(config["run_dir"]) / LOGS / f"rank_{rank}.log"):
        _train_rank(config, rank, context.get_world_size())


def _train_rank(config: dict, rank: int, world_size: int) -> None:
    run_dir = Path(config["run_dir"])
    cfg: RunConfig = config["config"]
    device = ray.train.torch.get_device() if cfg.scaling.use_gpu else "cpu"
    fault = config["fault"]
    launch = Launch(
        rank=rank,
        device=str(device),
        restore=_restore,
        on_checkpoint=_report_checkpoint,
        before_step=lambda step: _maybe_fail(fault, step, rank, world_size, run_dir),
    )
    config["rank_loop"](cfg, run_dir, config["pairs"], launch, **config["tensors"])


def _restore(trainer: MultiObjectiveTrainer) -> None:
    """The trainer as Ray's latest checkpoint of the run left it (a restarted worker group, a
    resumed run); nothing for a new run."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            load_checkpoint(Path(directory), trainer)


def _report_checkpoint(trainer: MultiObjectiveTrainer, metrics: dict) -> None:
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


@contextlib.contextmanager
def output_to(path: Path):
    """This process's stdout and stderr (Python's and the C libraries') appended to `path`, and
    the traceback of an error that ends it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, original in zip((1, 2), saved, strict=True):
                os.dup2(original, fd)
                os.close(original)


def _maybe_fail(fault: str | None, step: int, rank: int, world_size: int, run_dir: Path) -> None:
    """Fault injection for tests: FAULT_ENV="STEP[:RANK]", or several joined by commas, makes
    that rank (default: the last) raise once, before the step that would make `step` STEP."""
    if not fault:
        return
    for each in fault.split(","):
        at, _, which = each.partition(":")
        marker = run_dir / f".fault-injected-{at}"
        if step + 1 == int(at) and rank == int(which or world_size - 1) and not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected fault on rank {rank} before step {at} ({FAULT_ENV})")
