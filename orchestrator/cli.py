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

    evaluate = commands.add_parser("eval", help="evaluate a run's front on its λ grid again")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--output-dir", help="default: RUN_DIR/eval")
    evaluate.add_argument("overrides", nargs="*", metavar="key=value", help="eval.* overrides")

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
        elif args.command == "eval":
            _evaluate(args.run_dir, args.output_dir, args.overrides)
    except MoaError as err:
        print(f"moa {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _evaluate(run_dir: str, output_dir: str | None, overrides: list[str]) -> None:
    from pathlib import Path

    from orchestrator.workflow import evaluate_run, load_run

    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise MoaError(f"moa eval only takes eval.* overrides; got {bad}")
    cfg, tokenizer, model = load_run(run_dir, overrides)
    out_dir = Path(output_dir or Path(run_dir) / "eval")
    front = evaluate_run(cfg, model, tokenizer, out_dir)
    metrics = front.metrics()
    print(
        f"hypervolume {metrics['hypervolume']:.4f}, inner product {metrics['inner_product']:.4f}, "
        f"sparsity {metrics['sparsity']:.4f}, spacing {metrics['spacing']:.4f}"
    )
    print(f"written: {out_dir / 'front.json'}, {out_dir / 'front.png'}, {out_dir / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
