"""`moa compare`: Panacea (LS and Tche), SPO, SIPO and the baselines trained on the same task
with the same per-model budget (train.*), evaluated on the same λ grid (compare.grid_divisions),
prompts and reference point, for each seed of compare.seeds.

  OUT/config.yaml
  OUT/seed_S/experts/OBJECTIVE/   the DPO experts: DPO soups' ingredients, DPS's and MODPO's
                                  vertices and SPO's first stage, trained once per seed
  OUT/seed_S/METHOD/              each method's models (Ray Train run folders)
  OUT/seed_S/fronts/METHOD.json   each method's front on the grid
  OUT/results.json                per method and seed: metrics, wall time, models, parameters
  OUT/report.md, OUT/fronts.png   the table (mean ± std over seeds) and every method's front
                                  (points averaged over seeds)

Wall time is the training time of every model a method needs (shared experts counted in each
method that uses them) plus its margins' log-probs and, for SIPO, its rounds' generation and
judging; evaluation is not counted. A stopped comparison started again resumes: finished models
and fronts are kept.
"""

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.algorithms.soups import expert_deltas
from orchestrator.atomic import atomic_write_text
from orchestrator.baselines import train_dps, train_experts, train_modpo
from orchestrator.config import RunConfig, build_config
from orchestrator.data.schema import PairDataset
from orchestrator.errors import MoaError
from orchestrator.evaluation.answerers import (
    grouped_answerer,
    one_model_per_preference,
    preference_key,
    soup,
)
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.grid import simplex_grid
from orchestrator.evaluation.report import plot_fronts, read_front
from orchestrator.model.adapter_io import load_adapter
from orchestrator.model.svd_lora import adapter_parameters
from orchestrator.spo_workflow import spo_setup, train_spo
from orchestrator.workflow import (
    build_model,
    check_training_inputs,
    claim_output_dir,
    derived_config,
    evaluate_on_grid,
    train_model,
)

LABELS = {
    "panacea_ls": "Panacea (LS)",
    "panacea_tche": "Panacea (Tche)",
    "spo": "SPO",
    "sipo": "SIPO",
    "dpo_soups": "DPO soups",
    "dps": "DPS",
    "modpo": "MODPO",
}
EXPERT_METHODS = {"spo", "dpo_soups", "dps", "modpo"}


@dataclass
class MethodModels:
    """What a method trained for one seed, and how it answers a grid row."""

    seconds: float
    models: int  # models needed to cover the front
    setup: object  # an answerers.Setup, or None: the steerable model at the row's λ
    adapter: Path | None = None  # the steerable model's adapter (setup None)
    one_point: bool = False  # one model that answers every λ alike: no spread to measure


@dataclass
class CompareResult:
    out_dir: Path
    results: list[dict]  # one per (method, seed)
    table: list[dict]  # one per method: means and standard deviations over seeds


def run_compare(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False) -> CompareResult:
    if cfg.data.source != "assistant" or not cfg.eval.enabled:
        raise MoaError(
            "compare evaluates every method with the built-in task's scorers: it needs "
            "data.source: assistant and eval.enabled: true"
        )
    if "sipo" in cfg.compare.methods and "panacea_ls" not in cfg.compare.methods:
        raise MoaError("compare.methods: sipo starts from panacea_ls; list both")
    pairs = check_training_inputs(cfg)
    out = claim_output_dir(cfg, overwrite, "comparison")
    comparison = Comparison(cfg, pairs, progress)
    results = [
        comparison.result(method, seed)
        for seed in cfg.compare.seeds
        for method in cfg.compare.methods
    ]
    table = summarise(results, cfg.compare.methods)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    fronts = {
        LABELS[m]: mean_front([read_front(out / r["front"]) for r in results if r["method"] == m])
        for m in cfg.compare.methods
    }
    plot_fronts(
        out / "fronts.png",
        fronts,
        f"Fronts on the built-in task (mean of {len(cfg.compare.seeds)} seeds)",
    )
    atomic_write_text(out / "report.md", render_table(table, cfg))
    return CompareResult(out, results, table)


class Comparison:
    def __init__(self, cfg: RunConfig, pairs: PairDataset, progress: bool):
        self.cfg, self.pairs, self.progress = cfg, pairs, progress
        self.out = Path(cfg.output_dir)
        grid = simplex_grid(len(cfg.data.objectives), cfg.compare.grid_divisions)
        self.grid = [preference_key(row) for row in grid]
        self.tokenizer, self.model = build_model(cfg)
        self.adapter_size = sum(p.numel() for p in adapter_parameters(self.model).values())

    def seed_config(self, seed: int) -> RunConfig:
        data = self.cfg.model_dump()
        data["train"]["seed"] = seed
        data["eval"]["grid_divisions"] = self.cfg.compare.grid_divisions
        data["output_dir"] = str(self.out / f"seed_{seed}")
        return build_config(data)

    def result(self, method: str, seed: int) -> dict:
        cfg = self.seed_config(seed)
        models = getattr(self, method)(cfg, Path(cfg.output_dir))
        front_path = Path(cfg.output_dir) / "fronts" / f"{method}.json"
        if front_path.is_file():
            front = read_front(front_path)
        else:
            front = self.front(cfg, models)
            atomic_write_text(front_path, json.dumps(front.to_dict(), indent=2))
        metrics = front.metrics()
        spread = not models.one_point
        return {
            "method": method,
            "seed": seed,
            "hypervolume": metrics["hypervolume"],
            "inner_product": metrics["inner_product"],
            "sparsity": metrics["sparsity"] if spread else None,
            "spacing": metrics["spacing"] if spread else None,
            "seconds": models.seconds,
            "models": models.models,
            "trainable_parameters": models.models * self.adapter_size,
            "front": str(front_path.relative_to(self.out)),
        }

    def front(self, cfg: RunConfig, models: MethodModels) -> Front:
        answer = None
        if models.setup is None:
            load_adapter(self.model, models.adapter)
        else:
            answer = grouped_answerer(self.model, self.tokenizer, models.setup, cfg)
        return evaluate_on_grid(
            cfg,
            self.model,
            self.tokenizer,
            cfg.compare.grid_divisions,
            cfg.eval.num_prompts,
            with_base=False,
            answer=answer,
        )

    def experts(self, cfg: RunConfig, seed_dir: Path):
        return train_experts(cfg, self.pairs, seed_dir / "experts", self.progress)

    def _panacea(self, cfg: RunConfig, out_dir: Path, aggregation: str) -> MethodModels:
        config = derived_config(cfg, out_dir, aggregation=aggregation)
        adapter, seconds = train_model(config, self.pairs, progress=self.progress)
        return MethodModels(seconds, 1, None, adapter)

    def panacea_ls(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        return self._panacea(cfg, seed_dir / "panacea_ls", "ls")

    def panacea_tche(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        return self._panacea(cfg, seed_dir / "panacea_tche", "tche")

    def sipo(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        from orchestrator.sipo_workflow import resume_sipo, run_sipo

        start = self.panacea_ls(cfg, seed_dir)
        data = cfg.model_dump()
        data["sipo"]["init_from"] = str(seed_dir / "panacea_ls")
        data["eval"]["enabled"] = False
        data["output_dir"] = str(seed_dir / "sipo")
        config = build_config(data)
        run_dir = seed_dir / "sipo"
        if (run_dir / "sipo.json").is_file():
            rounds = json.loads((run_dir / "sipo.json").read_text())
        elif (run_dir / "config.yaml").is_file():
            rounds = resume_sipo(run_dir, progress=self.progress).rounds
        else:
            rounds = run_sipo(config, progress=self.progress).rounds
        seconds = start.seconds + sum(
            r["generation_seconds"] + r["judging_seconds"] + r["training_seconds"] for r in rounds
        )
        return MethodModels(seconds, 1, None, run_dir / "adapter")

    def spo(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        first = None
        if cfg.spo.betas is None or cfg.spo.betas[0] == cfg.train.beta:
            first = seed_dir / "experts" / cfg.spo_order[0]  # that expert is SPO's first stage
        stages = train_spo(cfg, self.pairs, seed_dir / "spo", first, self.progress)
        adapter = Path(stages[-1]["adapter"])
        seconds = sum(stage["seconds"] for stage in stages)
        return MethodModels(seconds, 1, spo_setup(cfg, self.model, adapter), one_point=True)

    def dpo_soups(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        experts = self.experts(cfg, seed_dir)
        deltas = expert_deltas(self.model, [e.adapter for e in experts.values()])
        seconds = sum(e.seconds for e in experts.values())
        return MethodModels(seconds, len(experts), soup(self.model, deltas))

    def dps(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        experts = self.experts(cfg, seed_dir)
        models = train_dps(cfg, self.pairs, seed_dir / "dps", self.grid, experts, self.progress)
        return self._per_preference(models)

    def modpo(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        experts = self.experts(cfg, seed_dir)
        models, margin_seconds = train_modpo(
            cfg, self.pairs, seed_dir / "modpo", self.grid, experts, self.progress
        )
        return self._per_preference(models, margin_seconds)

    def _per_preference(self, models: dict, extra_seconds: float = 0.0) -> MethodModels:
        adapters = {lam: (model.adapter, model.preference) for lam, model in models.items()}
        seconds = extra_seconds + sum(model.seconds for model in models.values())
        return MethodModels(seconds, len(models), one_model_per_preference(self.model, adapters))


def mean_front(fronts: list[Front]) -> Front:
    """The points of fronts on the same grid, averaged λ by λ."""
    first = fronts[0]
    points = np.mean([front.points for front in fronts], axis=0)
    return Front(first.objectives, first.preferences, points, first.reference_point)


METRICS = ("hypervolume", "inner_product", "sparsity", "spacing", "seconds")


def summarise(results: list[dict], methods: list[str]) -> list[dict]:
    """Per method: mean and standard deviation over seeds of each metric (None where a method's
    front has a single distinct point), models and trainable parameters."""
    table = []
    for method in methods:
        rows = [r for r in results if r["method"] == method]
        entry = {"method": method, "seeds": len(rows)}
        for name in METRICS:
            values = [r[name] for r in rows if r[name] is not None]
            entry[name] = statistics.fmean(values) if values else None
            entry[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else None
        entry["models"] = rows[0]["models"]
        entry["trainable_parameters"] = rows[0]["trainable_parameters"]
        table.append(entry)
    return table


def render_table(table: list[dict], cfg: RunConfig) -> str:
    seeds = ", ".join(str(s) for s in cfg.compare.seeds)
    lines = [
        "# Method comparison",
        "",
        f"Built-in task, objectives {cfg.data.objectives}; every model trained "
        f"{cfg.train.max_steps} steps of {cfg.global_batch} pairs; λ grid of "
        f"{cfg.compare.grid_divisions} divisions, {cfg.eval.num_prompts} held-out prompts per λ; "
        f"mean ± standard deviation over seeds {seeds}.",
        "",
        "![fronts](fronts.png)",
        "",
        "| method | hypervolume ↑ | inner product ↑ | sparsity ↓ | spacing ↓ | wall time (s) | "
        "trainable parameters | models to cover the front |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in table:
        cells = [LABELS[entry["method"]]]
        cells += [_mean_std(entry, name) for name in METRICS]
        cells += [f"{entry['trainable_parameters']:,}", str(entry["models"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Sparsity and spacing are left out (—) for a method whose front is one point (SPO: one "
        "model, the same answers at every λ). Wall time counts the training of every model a "
        "method needs, shared experts included, not the evaluation.",
    ]
    return "\n".join(lines) + "\n"


def _mean_std(entry: dict, name: str) -> str:
    mean, std = entry[name], entry[f"{name}_std"]
    if mean is None:
        return "—"
    digits = 0 if name == "seconds" else 4
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")
