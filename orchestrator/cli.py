"""The `moa` command line: arguments in, a recipe run, its result printed.

`python -m orchestrator.cli COMMAND ...` is the same, for `ray job submit`."""

import argparse
import os
import sys

import torch

from orchestrator.errors import MoaError


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed, imported by transformers
    import transformers

    transformers.utils.logging.disable_progress_bar()  # per-file bars of every model load
    parser = argparse.ArgumentParser(prog="moa", description="Multi-objective alignment on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="train the tiny built-in model on helpful vs harmless and show its front "
        "(replaces the output folder)",
    )
    demo.add_argument("--quick", action="store_true", help="a minute-long smoke run (for tests)")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    _add_run_command(
        commands,
        "train",
        "train a steerable model on Ray Train (a local Ray instance, or the cluster "
        "RAY_ADDRESS names)",
    )
    _add_run_command(
        commands,
        "reward",
        "train per-objective reward models (Bradley–Terry on the pairs' labels) on Ray Train "
        "and measure their pairwise accuracy on the test pairs",
    )
    _add_run_command(
        commands,
        "sipo",
        "SIPO self-improvement rounds on a Panacea model (trained first unless "
        "sipo.init_from names a finished run)",
    )
    _add_run_command(
        commands,
        "spo",
        "SPO: align the objectives one after another (spo.order), each stage anchored on the last",
    )
    _add_run_command(
        commands,
        "compare",
        "train Panacea (LS, Tche), SPO, SIPO, DPO soups, DPS and MODPO on the built-in task "
        "for each seed of compare.seeds and write one table and one picture (run it again to "
        "resume)",
        resumable=False,
    )
    _add_run_command(
        commands,
        "tune",
        "a Ray Tune sweep of training runs over tune.space, compared by their fronts; "
        "writes a table, the Pareto sets of trials and the best config (run it again to finish "
        "a stopped sweep)",
        resumable=False,
    )

    serve = commands.add_parser(
        "serve",
        help="serve a steerable model on Ray Serve: an OpenAI-compatible API with a preference "
        "vector per request (a local Ray instance, or the cluster RAY_ADDRESS names)",
    )
    serve.add_argument(
        "source", help="a run folder (its best adapter, else adapter/) or an adapter folder"
    )
    serve.add_argument(
        "--detach",
        action="store_true",
        help="return once it serves and leave it running on the cluster; run again with "
        "another adapter to reload it in place",
    )
    serve.add_argument(
        "overrides", nargs="*", metavar="key=value", help="serve.* and model.* overrides"
    )

    evaluate = commands.add_parser("eval", help="evaluate a run's front on its λ grid again")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--output-dir", help="default: RUN_DIR/eval")
    evaluate.add_argument(
        "overrides", nargs="*", metavar="key=value", help="eval.* and generation.* overrides"
    )

    # key=value overrides may come before or after the options, as in `moa eval RUN --output-dir
    # DIR eval.temperature=1`; argparse leaves those after an option among the unknown arguments.
    args, unknown = parser.parse_known_args(argv)
    stray = [arg for arg in unknown if arg.startswith("-") or "=" not in arg]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*args.overrides, *unknown]
    try:
        COMMANDS[args.command](args)
    except MoaError as err:
        print(f"moa {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _add_run_command(commands, name: str, help_text: str, resumable: bool = True) -> None:
    """A command that runs a recipe from a config (YAML and key=value overrides), or (with
    `resumable`) continues a stopped run with --resume; the others resume when run again."""
    command = commands.add_parser(name, help=help_text)
    command.add_argument("config", nargs="?", help="YAML config (default: the built-in defaults)")
    if resumable:
        command.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
        replaces = "replace an existing run folder"
    else:
        replaces = "replace a folder that holds one with another config (the same config resumes)"
    command.add_argument("--overwrite", action="store_true", help=replaces)
    command.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _run_config(args):
    """The config of a new run (None with --resume, which takes the run's own config.yaml)."""
    from orchestrator.config import load_config

    config, overrides = args.config, args.overrides
    if config is not None and "=" in config and not os.path.exists(config):
        config, overrides = None, [config, *overrides]  # only overrides of the defaults
    if getattr(args, "resume", None) is not None:
        if config is not None or overrides:
            raise MoaError("--resume takes the run's own config.yaml; give no config or overrides")
        return None
    return load_config(config, overrides)


def _print_front(front, out_dir) -> None:
    from orchestrator.evaluation.report import summary_lines

    if front is not None:
        print("\n".join(summary_lines(front)))
        print(
            f"written: {out_dir / 'front.json'}, {out_dir / 'front.png'}, {out_dir / 'report.md'}"
        )


def _demo(args) -> None:
    from orchestrator.recipes.demo import run_demo

    run_demo(args.output_dir, quick=args.quick, overrides=args.overrides)


def _train(args) -> None:
    from orchestrator.recipes.panacea import resume_panacea, run_panacea

    cfg = _run_config(args)
    result = (
        resume_panacea(args.resume) if cfg is None else run_panacea(cfg, overwrite=args.overwrite)
    )
    last = result.history[-1] if result.history else {}
    print(
        f"trained {last.get('step', 0)} steps in {result.train_seconds:.0f} s; "
        f"final loss {last.get('loss', float('nan')):.4f}; run folder {result.run_dir}"
    )
    _print_front(result.front, result.run_dir / "eval")


def _reward(args) -> None:
    from orchestrator.recipes.reward import resume_reward, run_reward

    cfg = _run_config(args)
    result = (
        resume_reward(args.resume) if cfg is None else run_reward(cfg, overwrite=args.overwrite)
    )
    measured = ", ".join(
        f"{name} {a['accuracy']:.3f} ({a['pairs']} pairs)" for name, a in result.accuracy.items()
    )
    print(f"trained in {result.train_seconds:.0f} s; test pairwise accuracy: {measured}")
    print(f"run folder {result.run_dir} (reward_model/, report.md)")


def _sipo(args) -> None:
    from orchestrator.evaluation.sipo_report import round_line
    from orchestrator.recipes.sipo import resume_sipo, run_sipo

    cfg = _run_config(args)
    result = resume_sipo(args.resume) if cfg is None else run_sipo(cfg, overwrite=args.overwrite)
    for stats in result.rounds:
        print(round_line(stats))
    print(f"run folder {result.run_dir} (report.md, fronts.png, adapter/)")


def _spo(args) -> None:
    from orchestrator.recipes.spo import resume_spo, run_spo

    cfg = _run_config(args)
    result = resume_spo(args.resume) if cfg is None else run_spo(cfg, overwrite=args.overwrite)
    for stage in result.stages:
        print(
            f"stage {stage['stage']}: {stage['objective']} (β {stage['beta']:g}), "
            f"{stage['seconds']:.0f} s"
        )
    _print_front(result.front, result.run_dir / "eval")
    print(f"run folder {result.run_dir} (adapter/, spo.json)")


def _compare(args) -> None:
    from orchestrator.evaluation.compare_report import render_table
    from orchestrator.recipes.compare import run_compare

    cfg = _run_config(args)
    result = run_compare(cfg, overwrite=args.overwrite)
    print(render_table(result.table, cfg))
    print(f"written: {result.out_dir / 'report.md'}, {result.out_dir / 'fronts.png'}")


def _tune(args) -> None:
    from orchestrator.recipes.sweep import run_sweep

    result = run_sweep(_run_config(args), overwrite=args.overwrite)
    print((result.out_dir / "report.md").read_text())
    print(f"written: {result.out_dir / 'report.md'}, {result.out_dir / 'pareto.png'}")
    print(f"best trial {result.best['trial']}: moa train {result.best_config}")


def _serve(args) -> None:
    from orchestrator.recipes.serve import serve_until_interrupted, start_serving

    served, url = start_serving(args.source, args.overrides, args.detach)
    s = served.settings
    print(
        f"serving {served.adapter} as model {s.model_name!r} at {url}/v1 "
        f"(objectives {served.objectives}; λ per request: body field 'preference' or "
        f"model '{s.model_name}:w1,...,wm')"
    )
    if not args.detach:
        print("Ctrl-C stops it")
        serve_until_interrupted(served)


def _evaluate(args) -> None:
    from orchestrator.recipes.evaluate import evaluate_folder

    front, out_dir = evaluate_folder(args.run_dir, args.output_dir, args.overrides)
    _print_front(front, out_dir)


COMMANDS = {
    "demo": _demo,
    "train": _train,
    "reward": _reward,
    "sipo": _sipo,
    "spo": _spo,
    "compare": _compare,
    "tune": _tune,
    "serve": _serve,
    "eval": _evaluate,
}


if __name__ == "__main__":
    sys.exit(main())
