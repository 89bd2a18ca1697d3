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
judging; evaluation is not counted. Every model is trained first, then every front evaluated:
reward-model scorers run on one generation pool's actors (ground truth, a pure function, on the
driver). A stopped comparison started again resumes: finished models and fronts are kept.
"""

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.algorithms.soups import expert_deltas
from orchestrator.atomic import atomic_write_text
from orchestrator.config import RunConfig, with_fields
from orchestrator.data.schema import PairDataset
from orchestrator.data.sources import dataset_name
from orchestrator.errors import MoaError
from orchestrator.evaluation.answerers import (
    grouped_answerer,
    one_model_per_preference,
    preference_key,
    soup,
)
from orchestrator.evaluation.compare_report import LABELS, mean_front, render_table, summarise
from orchestrator.evaluation.front import Front, Score
from orchestrator.evaluation.report import plot_fronts, read_front
from orchestrator.evaluation.run_front import evaluate_on_grid
from orchestrator.evaluation.scorers import Scorers
from orchestrator.model.adapter_io import load_adapter
from orchestrator.model.build import build_model
from orchestrator.model.svd_lora import adapter_parameters
from orchestrator.objectives.grid import simplex_grid
from orchestrator.recipes.baselines import model_config, train_dps, train_experts, train_modpo
from orchestrator.recipes.evaluate import run_pool
from orchestrator.recipes.inputs import check_training_inputs
from orchestrator.recipes.run_folder import TRAINING_RUN, RunKind, claim_run, train_into
from orchestrator.recipes.sipo import ensure_sipo
from orchestrator.recipes.spo import spo_setup, train_spo

COMPARISON = RunKind(
    "comparison",
    (*TRAINING_RUN.sections, "spo", "sipo", "compare"),
    (*TRAINING_RUN.outputs, "seed_*", "results.json", "report.md", "fronts.png"),
)


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
    if not cfg.eval.enabled:
        raise MoaError("compare evaluates every method's front: it needs eval.enabled: true")
    implicit = [name for name, scorer in cfg.scorers.items() if scorer == "implicit"]
    if implicit:
        raise MoaError(
            f"eval.scorers {implicit}: compare scores every method with the same judges, and an "
            "implicit reward is each model's own; use a reward model or ground truth"
        )
    if "sipo" in cfg.compare.methods and "panacea_ls" not in cfg.compare.methods:
        raise MoaError("compare.methods: sipo starts from panacea_ls; list both")
    pairs = check_training_inputs(cfg)
    out = claim_run(cfg, COMPARISON, overwrite)
    comparison = Comparison(cfg, pairs, progress)
    trained = [
        (method, seed, comparison.train(method, seed))
        for seed in cfg.compare.seeds
        for method in cfg.compare.methods
    ]
    with comparison.judges() as score:
        results = [comparison.result(*model, score) for model in trained]
    table = summarise(results, cfg.compare.methods)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    fronts = {
        LABELS[m]: mean_front([read_front(out / r["front"]) for r in results if r["method"] == m])
        for m in cfg.compare.methods
    }
    plot_fronts(
        out / "fronts.png",
        fronts,
        f"Fronts on {dataset_name(cfg.data)} (mean of {len(cfg.compare.seeds)} seeds)",
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
        fields = {
            "train.seed": seed,
            "eval.grid_divisions": self.cfg.compare.grid_divisions,
            "output_dir": str(self.out / f"seed_{seed}"),
        }
        return with_fields(self.cfg, fields)

    def train(self, method: str, seed: int) -> MethodModels:
        cfg = self.seed_config(seed)
        return getattr(self, method)(cfg, Path(cfg.output_dir))

    @contextmanager
    def judges(self) -> Iterator[Score]:
        """Every front's scorer: reward models on a generation pool's actors, opened at the
        first front to score (after the training, so that its actors' CPUs and GPUs were the
        trainers'; not at all when a resumed comparison has every front); ground truth, a pure
        function, here."""
        arguments = Scorers.arguments_for_run(self.cfg)
        if all(scorer == "ground_truth" for scorer in self.cfg.scorers.values()):
            yield Scorers(**arguments)
            return
        with ExitStack() as pools:
            on_pool: Score | None = None

            def score(prompts, responses):
                nonlocal on_pool
                if on_pool is None:
                    pool = pools.enter_context(run_pool(self.cfg, self.model))
                    on_pool = pool.scorer(arguments, progress=self.progress)
                return on_pool(prompts, responses)

            yield score

    def result(self, method: str, seed: int, models: MethodModels, score: Score) -> dict:
        cfg = self.seed_config(seed)
        front_path = Path(cfg.output_dir) / "fronts" / f"{method}.json"
        if front_path.is_file():
            front = read_front(front_path)
        else:
            front = self.front(cfg, models, score)
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

    def front(self, cfg: RunConfig, models: MethodModels, score: Score) -> Front:
        answer = None
        if models.setup is None:
            load_adapter(self.model, models.adapter)
        else:
            answer = grouped_answerer(self.model, self.tokenizer, models.setup, cfg)
        return evaluate_on_grid(
            cfg, self.model, self.tokenizer, with_base=False, answer=answer, score=score
        )

    def experts(self, cfg: RunConfig, seed_dir: Path):
        return train_experts(cfg, self.pairs, seed_dir / "experts", self.progress)

    def _panacea(self, cfg: RunConfig, out_dir: Path, aggregation: str) -> MethodModels:
        config = model_config(cfg, out_dir, {"train.aggregation": aggregation})
        adapter, seconds = train_into(config, self.pairs, progress=self.progress)
        return MethodModels(seconds, 1, None, adapter)

    def panacea_ls(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        return self._panacea(cfg, seed_dir / "panacea_ls", "ls")

    def panacea_tche(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        return self._panacea(cfg, seed_dir / "panacea_tche", "tche")

    def sipo(self, cfg: RunConfig, seed_dir: Path) -> MethodModels:
        start = self.panacea_ls(cfg, seed_dir)
        fields = {
            "sipo.init_from": str(seed_dir / "panacea_ls"),
            "eval.enabled": False,
            "output_dir": str(seed_dir / "sipo"),
        }
        rounds = ensure_sipo(with_fields(cfg, fields), progress=self.progress).rounds
        seconds = start.seconds + sum(
            r["generation_seconds"] + r["judging_seconds"] + r["training_seconds"] for r in rounds
        )
        return MethodModels(seconds, 1, None, seed_dir / "sipo" / "adapter")

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
