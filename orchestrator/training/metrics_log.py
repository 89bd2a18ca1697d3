"""Training metrics to a JSONL file, TensorBoard, MLflow (when installed) and the console.

A resumed run first drops what was logged after its checkpoint, so every step appears once.
"""

import importlib.util
import json
import sys
from pathlib import Path

from orchestrator.config.sections import LoggingSection

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsLogger:
    def __init__(
        self,
        run_dir: Path,
        cfg: LoggingSection,
        params: dict,
        resume_step: int = 0,
        console=None,
    ):
        self.path = run_dir / METRICS_FILE
        self.console = console or write_line
        truncate_after(self.path, resume_step)
        self.tensorboard = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(
                str(run_dir / TENSORBOARD_DIR), purge_step=resume_step + 1 if resume_step else None
            )
        self.mlflow = None
        if cfg.mlflow and importlib.util.find_spec("mlflow") is not None:
            import mlflow

            if cfg.mlflow_tracking_uri:
                mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
            mlflow.start_run(run_name=run_dir.name)
            mlflow.log_params(flatten(params))
            self.mlflow = mlflow

    def log(self, metrics: dict) -> None:
        step = metrics["step"]
        with self.path.open("a") as handle:
            handle.write(json.dumps(metrics) + "\n")
        scalars = {k: v for k, v in flatten(metrics).items() if isinstance(v, int | float)}
        scalars.pop("step")
        if self.tensorboard is not None:
            for name, value in scalars.items():
                self.tensorboard.add_scalar(name, value, step)
            self.tensorboard.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics(scalars, step=step)
        self.console(console_line(metrics))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            self.mlflow.end_run()


def write_line(line: str) -> None:
    """A line on stdout. Not print: Ray Train's workers patch print to copy every line into
    Ray's logger as well, which would write it twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def console_line(metrics: dict) -> str:
    parts = [f"step {metrics['step']}", f"loss {metrics['loss']:.4f}"]
    if "hypervolume" in metrics:
        parts.append(f"hypervolume {metrics['hypervolume']:.4f}")
    if "accuracy" in metrics:  # a reward model's, per objective
        parts.append("accuracy " + " ".join(f"{a:.2f}" for a in metrics["accuracy"]))
    parts += [f"lr {metrics['learning_rate']:.2e}", f"{metrics['tokens_per_s']:.0f} tok/s"]
    if "data_seconds" in metrics:
        parts.append(
            f"data {metrics['data_seconds']:.2f}s fwd/bwd {metrics['compute_seconds']:.2f}s "
            f"opt {metrics['optimizer_seconds']:.2f}s"
        )
    if "eval_seconds" in metrics:
        parts.append(f"eval {metrics['eval_seconds']:.1f}s")
    return " | ".join(parts)


def flatten(data: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}, "c": [1, 2]} → {"a.b": 1, "c.0": 1, "c.1": 2}."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat.update(flatten(dict(enumerate(value)), f"{name}."))
        else:
            flat[name] = value
    return flat


def truncate_after(path: Path, step: int) -> None:
    """Keep only the lines of steps ≤ `step` (all of them go when step is 0)."""
    if path.exists():
        kept = [json.dumps(line) for line in _records(path) if line["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    return _records(path) if path.exists() else []


def _records(path: Path) -> list[dict]:
    """The file's records; a line cut short by a worker killed mid-write is skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
