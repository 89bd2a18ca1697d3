"""`moa tune`: a Ray Tune sweep over training configurations (tune.space). Each trial is a Tune
function that trains a Ray Train run of the sweep's config with the trial's values; the run's
results reach Tune as rank 0 reports them, each carrying the hypervolume and inner product of
the coarse λ grid (eval.coarse_*) evaluated every eval.every steps. ASHA (tune.scheduler: asha)
stops trials that trail at step milestones.

  OUT/config.yaml        the sweep's config
  OUT/tuner/             Ray Tune's experiment state, read when the sweep is started again
  OUT/trials/TRIAL_ID/   each trial's run folder (config.yaml, metrics.jsonl, best/, adapter/,
                         train.json once it is done)
  OUT/results.json       per trial: its values, steps, metrics, compute, status, Pareto sets
  OUT/report.md          the table of all trials
  OUT/pareto.png         hypervolume against inner product and against compute
  OUT/best.yaml          the best trial's config, which `moa train` takes as it is
  OUT/best_front/        the chosen model measured: the best trial's best adapter's front over
                         eval.grid_divisions on the test prompts (front.json, front.png,
                         report.md); trials are ranked on validation prompts only

A sweep stopped part-way (Ctrl+C, a lost driver) is finished by the same command: Tune restores
its state, finished trials are kept, and a trial that was running continues from its last
checkpoint.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.atomic import atomic_write_text
from orchestrator.config import RunConfig, load_config, with_fields
from orchestrator.config.sweep_space import check_space, count_trials, largest, trial_config
from orchestrator.distributed.cluster import ensure_ray
from orchestrator.distributed.tune import TUNER, report, report_callback, run_tuner, trial_id
from orchestrator.errors import MoaError
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.sweep_report import (
    best_trial,
    mark_pareto_sets,
    plot_sweep,
    render_sweep,
)
from orchestrator.recipes.evaluate import front_on_pool
from orchestrator.recipes.inputs import check_training_inputs
from orchestrator.recipes.run_folder import (
    TRAINED,
    TRAINING_RUN,
    RunKind,
    claim_run,
    load_trained,
    train_into,
)
from orchestrator.training.metrics_log import read_metrics

TRIALS = "trials"
BEST_FRONT = "best_front"
SWEEP = RunKind(
    "sweep",
    (*TRAINING_RUN.sections, "tune"),
    (
        *TRAINING_RUN.outputs,
        TUNER,
        TRIALS,
        "results.json",
        "report.md",
        "pareto.png",
        "best.yaml",
        BEST_FRONT,
    ),
)


@dataclass
class SweepResult:
    out_dir: Path
    trials: list[dict]  # one per trial, in trial order
    best: dict  # the trial with the highest tune.metric
    best_config: Path  # OUT/best.yaml
    test_front: Front  # the best trial's best adapter on the test prompts (OUT/best_front)


def run_sweep(cfg: RunConfig, *, overwrite: bool = False) -> SweepResult:
    """Run the sweep `cfg` describes into cfg.output_dir, or finish a stopped one there."""
    check_sweep(cfg)
    check_training_inputs(cfg)  # also builds the built-in base once, before the trials
    out = claim_run(cfg, SWEEP, overwrite).resolve()
    ensure_ray()
    grid = run_tuner(run_trial, cfg, out, sweep=cfg, trials_dir=str(out / TRIALS))
    total = count_trials(cfg)
    if grid.num_terminated + grid.num_errors < total:
        raise MoaError(
            f"the sweep stopped with {grid.num_terminated + grid.num_errors} of {total} trials "
            "done; run the same command again to finish the rest"
        )
    trials = [trial_row(cfg, out, result) for result in grid]
    trials.sort(key=lambda row: row["trial"])
    if all(row["status"] == "error" for row in trials):
        raise MoaError(f"every trial failed; the first: {trials[0]['error']}")
    mark_pareto_sets(trials)
    best = best_trial(trials, cfg.tune.metric)
    best_config = write_best_config(cfg, out, best)
    test_front = measure_chosen(out, best)
    atomic_write_text(out / "results.json", json.dumps(trials, indent=2))
    plot_sweep(out / "pareto.png", trials, cfg.tune.metric)
    atomic_write_text(out / "report.md", render_sweep(cfg, trials, best, test_front))
    return SweepResult(out, trials, best, best_config, test_front)


def check_sweep(cfg: RunConfig) -> None:
    """Everything a sweep needs, checked before any trial starts."""
    check_space(cfg)
    ev, every = cfg.eval, cfg.checkpoint.every
    if not (ev.enabled and ev.every > 0):
        raise MoaError(
            "a sweep compares trials by the hypervolume of their fronts during training: it "
            "needs eval.enabled: true and eval.every > 0"
        )
    if cfg.tune.scheduler == "asha" and cfg.tune.grace_period >= largest(cfg, "train.max_steps"):
        raise MoaError(
            f"tune.grace_period ({cfg.tune.grace_period}) must be less than train.max_steps "
            f"({largest(cfg, 'train.max_steps')}): ASHA stops trials only at milestones before "
            "the last step"
        )
    if every % ev.every:
        raise MoaError(
            f"checkpoint.every ({every}) must be a multiple of eval.every ({ev.every}): every "
            "result a trial reports to Tune goes with a checkpoint and must carry the hypervolume"
        )


def run_trial(params: dict, *, sweep: RunConfig, trials_dir: str) -> None:
    """One trial: the Ray Train run of the sweep's config with `params`, on the data that config
    names (a sweep may vary data.*). A run already finished (a restored sweep) is not trained
    again; its last evaluation is reported instead."""
    run_dir = Path(trials_dir) / trial_id()
    cfg = trial_config(sweep, params, str(run_dir))
    if (run_dir / TRAINED).is_file():
        evaluated = [row for row in read_metrics(run_dir) if "hypervolume" in row]
        report(evaluated[-1])
        return
    pairs = check_training_inputs(cfg)
    train_into(cfg, pairs, progress=False, callbacks=[report_callback()])


def trial_row(cfg: RunConfig, out: Path, result) -> dict:
    """A trial's line of the table, from Tune's last result of it; for a trial whose run is done
    (train.json), from its run's last evaluation, which Tune may not have seen (a run that ended
    while its sweep was being stopped)."""
    metrics = result.metrics or {}
    name = Path(result.path).name
    params = {key: result.config[key] for key in cfg.tune.space}
    trial_cfg = trial_config(cfg, params, str(out / TRIALS / name))
    if (out / TRIALS / name / TRAINED).is_file():
        evaluated = [row for row in read_metrics(out / TRIALS / name) if "hypervolume" in row]
        metrics = {**metrics, **evaluated[-1]}
    steps = metrics.get("step", 0)
    if result.error is not None:
        status = "error"
    elif steps < trial_cfg.train.max_steps:
        status = "stopped early"
    else:
        status = "finished"
    seconds = metrics.get("time_total_s")
    return {
        "trial": name,
        "params": params,
        "status": status,
        "step": steps,
        "hypervolume": metrics.get("hypervolume"),
        "inner_product": metrics.get("inner_product"),
        "seconds": seconds,
        # wall time × workers: what the trial held of the cluster
        "compute": None if seconds is None else seconds * trial_cfg.scaling.num_workers,
        "error": None if result.error is None else str(result.error).strip().splitlines()[-1],
        "run_dir": str(Path(TRIALS) / name),
    }


def measure_chosen(out: Path, best: dict) -> Front:
    """The front of the model the sweep chose (the best trial's best adapter) on the test
    prompts, written to OUT/best_front."""
    trial_cfg, tokenizer, model = load_trained(out / best["run_dir"], best=True)
    title = f"Sweep's chosen model: trial {best['trial']} (test prompts)"
    return front_on_pool(trial_cfg, model, tokenizer, out / BEST_FRONT, title, progress=False)


def write_best_config(cfg: RunConfig, out: Path, best: dict) -> Path:
    """The best trial's config without the sweep, trained into OUTPUT_DIR-best."""
    trial = load_config(out / best["run_dir"] / "config.yaml")
    data = with_fields(trial, {"output_dir": f"{cfg.output_dir.rstrip('/')}-best"})
    data = data.model_dump(exclude={"tune"})
    path = out / "best.yaml"
    header = f"# The best trial ({best['trial']}) of the sweep in {out}; train it with\n"
    header += f"#   moa train {path}\n"
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    return path
