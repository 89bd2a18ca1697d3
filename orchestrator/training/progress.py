"""The console's view of a run that trains elsewhere (in Ray Train's workers): one progress bar of
steps with the loss and tokens/s, and a line per evaluation, read from RUN_DIR/metrics.jsonl as
rank 0 writes it. The workers' own output goes to RUN_DIR/logs."""

import json
import threading
from pathlib import Path

from tqdm import tqdm

from orchestrator.training.metrics_log import METRICS_FILE


class RunProgress:
    """A context manager: follows the run in `run_dir` until it exits."""

    def __init__(self, run_dir: Path, total_steps: int, interval_s: float = 1.0):
        self.path, self.total, self.interval = run_dir / METRICS_FILE, total_steps, interval_s
        self._read = 0  # bytes of the file already shown
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self.step = 0  # the last step shown
        self.best = float("-inf")

    def __enter__(self) -> "RunProgress":
        # A resumed run starts at its last logged step; what it logs again is not shown twice.
        logged = self._new_records()
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
        for metrics in self._new_records():
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

    def _new_records(self) -> list[dict]:
        """The whole lines written since the last call. A resumed run's worker first cuts the
        file back to its checkpoint: then it is read again from the start (what was shown is
        skipped by its step)."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            if handle.seek(0, 2) < self._read:
                self._read = 0
            handle.seek(self._read)
            data = handle.read()
        whole = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self._read += len(whole)
        records = []
        for line in whole.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # read from inside a line of a file cut back meanwhile
                continue
        return records


def evaluation_line(metrics: dict, best: bool) -> str:
    return (
        f"step {metrics['step']}: hypervolume {metrics['hypervolume']:.4f}, inner product "
        f"{metrics['inner_product']:.4f} (coarse grid, validation prompts)"
        + (", the best so far: kept in best/" if best else "")
    )
