"""The console's view of a run that trains elsewhere (in Ray Train's workers): one progress bar of
steps with the loss and tokens/s, and a line per evaluation, read from RUN_DIR/metrics.jsonl as
rank 0 writes it. The workers' own output goes to RUN_DIR/logs."""

import threading
from pathlib import Path

from tqdm import tqdm

from orchestrator.training.metrics_log import read_metrics


class RunProgress:
    """A context manager: follows the run in `run_dir` until it exits."""

    def __init__(self, run_dir: Path, total_steps: int, interval_s: float = 1.0):
        self.run_dir, self.total, self.interval = run_dir, total_steps, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self.step = 0  # the last step shown
        self.best = float("-inf")

    def __enter__(self) -> "RunProgress":
        # A resumed run starts at its last logged step; what it logs again is not shown twice.
        logged = read_metrics(self.run_dir)
        self.step = max((m["step"] for m in logged), default=0)
        self.best = max((m["hypervolume"] for m in logged if "hypervolume" in m), default=self.best)
        self.bar = tqdm(total=self.total, initial=self.step, desc="train", unit="step")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.show_new()
        self.bar.close()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            self.show_new()

    def show_new(self) -> None:
        """Advance the bar to the newest logged step; a line for each new evaluation."""
        for metrics in read_metrics(self.run_dir):
            if metrics["step"] <= self.step:
                continue
            self.bar.update(metrics["step"] - self.step)
            self.step = metrics["step"]
            self.bar.set_postfix(
                loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}"
            )
            if "hypervolume" in metrics:
                self.bar.write(evaluation_line(metrics, metrics["hypervolume"] > self.best))
                self.best = max(self.best, metrics["hypervolume"])


def evaluation_line(metrics: dict, best: bool) -> str:
    return (
        f"step {metrics['step']}: hypervolume {metrics['hypervolume']:.4f}, inner product "
        f"{metrics['inner_product']:.4f} (coarse grid, validation prompts)"
        + (", the best so far: kept in best/" if best else "")
    )
