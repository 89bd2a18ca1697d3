"""A sweep on Ray Tune: the search space as Tune's samplers, the scheduler (FIFO or ASHA), how
many trials run at once, and the tuner itself, started or restored from its saved state.

What a trial does is the sweep recipe's (recipes/sweep.py): a Tune function that trains a Ray
Train run and reports its results through `report_callback`.
"""

import os
from collections.abc import Callable
from pathlib import Path

import ray
from ray import tune

from orchestrator.config import RunConfig
from orchestrator.config.sweep_space import largest, samplers
from orchestrator.errors import MoaError

TUNER = "tuner"
# A trial only waits on its Ray Train run, whose workers hold the CPUs; Tune needs some resource
# in a trial's request, so it asks for a sliver.
TRIAL_CPUS = 0.01


def run_tuner(trial: Callable, cfg: RunConfig, out: Path, **trial_args):
    """Run the sweep `cfg` describes, each trial `trial(params, **trial_args)`, with Tune's state
    in OUT/tuner: a sweep stopped part-way (Ctrl+C, a lost driver) is restored, its finished
    trials kept. Returns the results as that saved state has them (`fit()`'s own count a trial an
    interrupt cut short as terminated)."""
    # Tune's newer console output prints a table when an experiment starts even at verbose=0;
    # the older one is silent at 0, which leaves the console to TrialLines.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    trainable = tune.with_resources(tune.with_parameters(trial, **trial_args), {"cpu": TRIAL_CPUS})
    state = out / TUNER
    if tune.Tuner.can_restore(state):
        tuner = tune.Tuner.restore(str(state), trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space(cfg),
            tune_config=tune_config(cfg),
            run_config=tune.RunConfig(
                name=TUNER, storage_path=str(out), verbose=0, callbacks=[TrialLines()]
            ),
        )
    tuner.fit()
    return tune.Tuner.restore(str(state), trainable).get_results()


class TrialLines(tune.Callback):
    """One console line per trial that ends, in place of Tune's periodic status tables."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        print(trial_line(trial.trial_id, "ended", trial.last_result), flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(trial_line(trial.trial_id, "failed", trial.last_result), flush=True)


def trial_line(trial_id: str, what: str, result: dict) -> str:
    line = f"trial {trial_id} {what}"
    if "step" in result:
        line += f" at step {result['step']}"
    if "hypervolume" in result:
        line += f": hypervolume {result['hypervolume']:.4f} (coarse grid, validation prompts)"
    return line


def tune_space(cfg: RunConfig) -> dict:
    """The param_space Ray Tune samples, one entry per dimension of tune.space."""
    return {key: getattr(tune, name)(*args) for key, (name, args) in samplers(cfg).items()}


def tune_config(cfg: RunConfig) -> tune.TuneConfig:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    sweep = cfg.tune
    scheduler = FIFOScheduler()
    if sweep.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="step",
            # Milestones are grace_period·reduction_factor^k up to max_t. One at the last step
            # would kill a trial that has trained in full while it saves its adapter.
            max_t=largest(cfg, "train.max_steps") - 1,
            grace_period=sweep.grace_period,
            reduction_factor=sweep.reduction_factor,
            stop_last_trials=False,  # a trial past the last milestone finishes its run
        )
    return tune.TuneConfig(
        metric=sweep.metric,
        mode="max",
        scheduler=scheduler,
        search_alg=BasicVariantGenerator(
            random_state=sweep.seed, max_concurrent=concurrent_trials(cfg)
        ),
        num_samples=sweep.num_samples,
        trial_dirname_creator=trial_dirname,
        # A trial's process (its imports, ~10 s) serves the next trial; its Ray Train run is its own.
        reuse_actors=True,
    )


def trial_dirname(trial) -> str:
    """Tune's folder of a trial: its id, as its run folder in the sweep's trials/."""
    return trial.trial_id


def concurrent_trials(cfg: RunConfig) -> int:
    """tune.max_concurrent_trials, else as many trials as the cluster's CPUs and GPUs fit, each
    needing the worker group of its largest scaling.* values."""
    if cfg.tune.max_concurrent_trials is not None:
        return cfg.tune.max_concurrent_trials
    workers = largest(cfg, "scaling.num_workers")
    cluster = ray.cluster_resources()
    per_trial = workers * largest(cfg, "scaling.cpus_per_worker") + TRIAL_CPUS
    fits = int(cluster.get("CPU", 0) // per_trial)
    if largest(cfg, "scaling.use_gpu"):
        fits = min(fits, int(cluster.get("GPU", 0) // workers))
    if fits < 1:
        raise MoaError(
            f"the cluster ({cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs) cannot "
            f"hold one trial's {workers} workers (scaling.*)"
        )
    return fits


def trial_id() -> str:
    """The id of the trial this Tune function runs."""
    return tune.get_context().get_trial_id()


def report(metrics: dict) -> None:
    """Report a trial's result to Tune from its Tune function."""
    tune.report(metrics)


def report_callback():
    """The Ray Train callback that reports each of a trial's Train results to Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback

    return TuneReportCallback()
