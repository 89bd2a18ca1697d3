"""The `moa` command line."""

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
        "sipo",
        "SIPO self-improvement rounds on a Panacea model (trained first unless "
        "sipo.init_from names a finished run)",
    )

    _add_run_command(
        commands,
        "spo",
        "SPO: align the objectives one after another (spo.order), each stage anchored on the last",
    )

    compare = commands.add_parser(
        "compare",
        help="train Panacea (LS, Tche), SPO, SIPO, DPO soups, DPS and MODPO on the built-in task "
        "for each seed of compare.seeds and write one table and one picture (run it again to "
        "resume)",
    )
    compare.add_argument("config", nargs="?", help="YAML config (default: the built-in defaults)")
    compare.add_argument(
        "--overwrite", action="store_true", help="replace a comparison with another config"
    )
    compare.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    sweep = commands.add_parser(
        "tune",
        help="a Ray Tune sweep of training runs over tune.space, compared by their fronts; "
        "writes a table, the Pareto sets of trials and the best config (run it again to finish "
        "a stopped sweep)",
    )
    sweep.add_argument("config", help="YAML config with a tune section")
    sweep.add_argument(
        "--overwrite", action="store_true", help="replace a sweep with another config"
    )
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

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
        if args.command == "demo":
            from orchestrator.demo import run_demo

            run_demo(args.output_dir, quick=args.quick, overrides=args.overrides)
        elif args.command == "train":
            _train(args.config, args.resume, args.overwrite, args.overrides)
        elif args.command == "sipo":
            _sipo(args.config, args.resume, args.overwrite, args.overrides)
        elif args.command == "spo":
            _spo(args.config, args.resume, args.overwrite, args.overrides)
        elif args.command == "compare":
            _compare(args.config, args.overwrite, args.overrides)
        elif args.command == "tune":
            _tune(args.config, args.overwrite, args.overrides)
        elif args.command == "serve":
            _serve(args.source, args.detach, args.overrides)
        elif args.command == "eval":
            _evaluate(args.run_dir, args.output_dir, args.overrides)
    except MoaError as err:
        print(f"moa {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _add_run_command(commands, name: str, help_text: str) -> None:
    """A command that starts a run from a config, or continues a stopped one."""
    command = commands.add_parser(name, help=help_text)
    command.add_argument("config", nargs="?", help="YAML config (default: the built-in defaults)")
    command.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
    command.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    command.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _run_config(config: str | None, resume: str | None, overrides: list[str]):
    """The config of a new run (None with --resume, which takes the run's own config.yaml)."""
    from orchestrator.config import load_config

    if config is not None and "=" in config and not os.path.exists(config):
        config, overrides = None, [config, *overrides]  # only overrides of the defaults
    if resume is not None:
        if config is not None or overrides:
            raise MoaError("--resume takes the run's own config.yaml; give no config or overrides")
        return None
    return load_config(config, overrides)


def _train(config: str | None, resume: str | None, overwrite: bool, overrides: list[str]):
    from orchestrator.workflow import resume_panacea, run_panacea

    cfg = _run_config(config, resume, overrides)
    result = resume_panacea(resume) if cfg is None else run_panacea(cfg, overwrite=overwrite)
    last = result.history[-1] if result.history else {}
    print(
        f"trained {last.get('step', 0)} steps in {result.train_seconds:.0f} s; "
        f"final loss {last.get('loss', float('nan')):.4f}; run folder {result.run_dir}"
    )
    if result.front is not None:
        metrics = result.front.metrics()
        print(
            f"front: hypervolume {metrics['hypervolume']:.4f} "
            f"(base model {metrics['base_hypervolume']:.4f}), "
            f"inner product {metrics['inner_product']:.4f}; "
            f"{result.run_dir / 'eval' / 'front.png'}"
        )


def _sipo(config: str | None, resume: str | None, overwrite: bool, overrides: list[str]):
    from orchestrator.sipo_workflow import resume_sipo, run_sipo

    cfg = _run_config(config, resume, overrides)
    result = resume_sipo(resume) if cfg is None else run_sipo(cfg, overwrite=overwrite)
    for stats in result.rounds:
        line = (
            f"round {stats['round']}: {stats['survivors']}/{stats['pairs_tried']} conflicting "
            f"pairs improved ({stats['acceptance_rate']:.1%}), {stats['new_pairs']} new pairs, "
            f"{stats['realign_steps']} re-alignment steps"
        )
        if "hypervolume_after" in stats:
            line += (
                f"; hypervolume {stats['hypervolume_before']:.4f} → "
                f"{stats['hypervolume_after']:.4f}"
            )
        print(line)
    print(f"run folder {result.run_dir} (report.md, fronts.png, adapter/)")


def _spo(config: str | None, resume: str | None, overwrite: bool, overrides: list[str]):
    from orchestrator.spo_workflow import resume_spo, run_spo

    cfg = _run_config(config, resume, overrides)
    result = resume_spo(resume) if cfg is None else run_spo(cfg, overwrite=overwrite)
    for stage in result.stages:
        print(
            f"stage {stage['stage']}: {stage['objective']} (β {stage['beta']:g}), "
            f"{stage['seconds']:.0f} s"
        )
    if result.front is not None:
        metrics = result.front.metrics()
        print(
            f"hypervolume {metrics['hypervolume']:.4f}, inner product "
            f"{metrics['inner_product']:.4f}; {result.run_dir / 'eval' / 'front.png'}"
        )
    print(f"run folder {result.run_dir} (adapter/, spo.json)")


def _compare(config: str | None, overwrite: bool, overrides: list[str]) -> None:
    from orchestrator.compare import render_table, run_compare

    cfg = _run_config(config, None, overrides)
    result = run_compare(cfg, overwrite=overwrite)
    print(render_table(result.table, cfg))
    print(f"written: {result.out_dir / 'report.md'}, {result.out_dir / 'fronts.png'}")


def _tune(config: str, overwrite: bool, overrides: list[str]) -> None:
    from orchestrator.distributed.tune import run_sweep

    result = run_sweep(_run_config(config, None, overrides), overwrite=overwrite)
    print((result.out_dir / "report.md").read_text())
    print(f"written: {result.out_dir / 'report.md'}, {result.out_dir / 'pareto.png'}")
    print(f"best trial {result.best['trial']}: moa train {result.best_config}")


def _serve(source: str, detach: bool, overrides: list[str]) -> None:
    import time

    import ray
    from ray import serve

    from orchestrator.distributed.serve import deploy, served_model

    served = served_model(source, overrides)
    ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    if detach and ray._private.worker.global_worker.node.head:
        raise MoaError(
            "--detach needs a Ray cluster that outlives this command (RAY_ADDRESS, or a head "
            "started with `ray start --head`); without one, leave --detach out"
        )
    url = deploy(served)
    s = served.settings
    print(
        f"serving {served.adapter} as model {s.model_name!r} at {url}/v1 "
        f"(objectives {served.objectives}; λ per request: body field 'preference' or "
        f"model '{s.model_name}:w1,...,wm')"
    )
    if detach:
        return
    print("Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.delete(s.app_name)


def _evaluate(run_dir: str, output_dir: str | None, overrides: list[str]) -> None:
    from pathlib import Path

    from orchestrator.workflow import evaluate_with_pool, load_run

    bad = [o for o in overrides if not o.startswith(("eval.", "generation."))]
    if bad:
        raise MoaError(f"moa eval only takes eval.* and generation.* overrides; got {bad}")
    cfg, tokenizer, model = load_run(run_dir, overrides)
    out_dir = Path(output_dir or Path(run_dir) / "eval")
    front = evaluate_with_pool(cfg, model, tokenizer, out_dir)
    metrics = front.metrics()
    print(
        f"hypervolume {metrics['hypervolume']:.4f}, inner product {metrics['inner_product']:.4f}, "
        f"sparsity {metrics['sparsity']:.4f}, spacing {metrics['spacing']:.4f}"
    )
    print(f"written: {out_dir / 'front.json'}, {out_dir / 'front.png'}, {out_dir / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
