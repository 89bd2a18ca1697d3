"""How often one `moa compare` seed computes π_ref's log-probs, with the reference cache and not.

Runs the comparison's methods on the built-in task (tiny model, 2 steps per model, training in
this process so its reference passes can be counted; the margins tasks and evaluation on a local
Ray instance) twice, each in a process and MOA_CACHE_DIR of its own: once as it is, once with the
trainers' cache lookups switched off. Prints the π_ref batches the trainers computed and the
cache entries left.

    python bench/reference_reuse.py
"""

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.config import load_config
from orchestrator.model.loading import resolve_model_path
from orchestrator.recipes import compare, run_folder
from orchestrator.training import reference_cache
from orchestrator.training import trainer as trainer_module
from orchestrator.training.loop import train_rank

METHODS = "[panacea_ls, panacea_tche, spo, dpo_soups, dps, modpo]"


def count_reference_batches(cached: bool, base: Path, pairs: int) -> tuple[int, int, float]:
    """(π_ref batches the trainers computed, reference cache entries, seconds) of one seed."""
    root = Path(tempfile.mkdtemp(prefix="moa-bench-reference-"))
    try:
        os.environ["MOA_CACHE_DIR"] = str(root / "cache")
        computed = 0
        original = trainer_module.reference_logprobs

        def counting(model, batch, pref=None, *, initial=False):
            nonlocal computed
            computed += not initial
            return original(model, batch, pref, initial=initial)

        def in_process(cfg, run_dir, pairs, progress=True, margins=None, reference=None, **_):
            start = time.perf_counter()
            train_rank(cfg, run_dir, pairs, margins=margins, reference=reference)
            return time.perf_counter() - start

        trainer_module.reference_logprobs = counting
        trainer_module.cached_reference = (
            reference_cache.cached_reference if cached else (lambda key: None)
        )
        run_folder.train = in_process
        cfg = load_config(
            None,
            [
                f"model.name_or_path={base}",
                f"data.num_pairs={pairs}",
                "train.max_steps=2",
                "train.batch_size=8",
                "eval.num_prompts=2",
                "eval.max_new_tokens=8",
                "compare.seeds=[0]",
                "compare.grid_divisions=2",
                f"compare.methods={METHODS}",
                "logging.tensorboard=false",
                "logging.mlflow=false",
                f"output_dir={root / 'compare'}",
            ],
        )
        start = time.perf_counter()
        compare.run_compare(cfg, progress=False)
        entries = len(list((root / "cache" / reference_cache.FOLDER).glob("*.pt")))
        return computed, entries, time.perf_counter() - start
    finally:
        trainer_module.reference_logprobs = original
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-pairs", type=int, default=64)
    parser.add_argument("--cache", choices=["on", "off"], help="one row (else both, each alone)")
    args = parser.parse_args()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if args.cache is None:
        print(f"moa compare, one seed, methods {METHODS}, {args.num_pairs} pairs, tiny model")
        print(f"{'reference cache':<16} {'π_ref batches':>13} {'cache entries':>13} {'seconds':>8}")
        for cache in ("off", "on"):  # a process each: its Ray instance takes its MOA_CACHE_DIR
            row = [sys.executable, __file__, "--cache", cache, f"--num-pairs={args.num_pairs}"]
            subprocess.run(row, check=True)
        return
    base = Path(resolve_model_path("builtin:tiny"))  # before MOA_CACHE_DIR moves
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        computed, entries, seconds = count_reference_batches(
            args.cache == "on", base, args.num_pairs
        )
    print(f"{args.cache:<16} {computed:>13} {entries:>13} {seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
