"""Model selection during training: every eval.every steps rank 0 measures the hypervolume of the
coarse λ grid (eval.coarse_*) on the validation prompts, and the best adapter so far is kept in
RUN_DIR/best with best.json."""

import json
import time
from pathlib import Path

from orchestrator.atomic import atomic_directory
from orchestrator.config import RunConfig
from orchestrator.evaluation.run_front import evaluate_on_grid, split_prompts
from orchestrator.evaluation.scorers import Scorers
from orchestrator.model.adapter_io import save_adapter

BEST = "best"


class BestAdapter:
    def __init__(self, cfg: RunConfig, model, tokenizer, run_dir: Path):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.best_dir = run_dir / BEST
        best = self.best_dir / "best.json"
        self.best = json.loads(best.read_text())["hypervolume"] if best.is_file() else float("-inf")
        # Once per run: the test prompts only measure the model that was chosen.
        self.prompts = split_prompts(cfg, "validation", cfg.eval.coarse_num_prompts)
        self.score = Scorers.for_run(cfg, policy=(model, tokenizer))

    def evaluate(self, step: int) -> dict:
        """The coarse front's metrics at `step` (logged with the step); a better adapter than the
        best so far replaces it."""
        start = time.perf_counter()
        ev = self.cfg.eval
        front = evaluate_on_grid(
            self.cfg,
            self.model,
            self.tokenizer,
            ev.coarse_grid_divisions,
            self.prompts,
            with_base=False,
            score=self.score,
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
