"""SIPO after Panacea-DPO on the built-in task: the hypervolume before and after each round, per
seed and judge, on the same λ grid and reference point (the config's eval section).

    python bench/sipo_rounds.py --seeds 0,1,2 --judges implicit,ground_truth

Each seed trains Panacea once (train.seed = sipo.seed = seed) in the first judge's run; the other
judges start from that same Panacea run (sipo.init_from), so they differ only in the judge. A run
folder that is already there is resumed (finished rounds are read back), so a stopped benchmark
continues where it was.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from orchestrator.config import load_config
from orchestrator.recipes.sipo import resume_sipo, run_sipo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="jobs/sipo_tiny.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--judges", default="implicit")
    parser.add_argument("--output-dir", default="runs/bench-sipo")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        panacea = None
        for judge in args.judges.split(","):
            out = Path(args.output_dir) / f"seed{seed}-{judge}"
            overrides = [
                f"train.seed={seed}",
                f"sipo.seed={seed}",
                f"sipo.judge={judge}",
                f"output_dir={out}",
                *args.overrides,
            ]
            if panacea is not None:
                overrides.append(f"sipo.init_from={panacea}")
            start = time.perf_counter()
            if (out / "config.yaml").is_file():  # continue an earlier, stopped benchmark
                result = resume_sipo(out, progress=False)
            else:
                result = run_sipo(load_config(args.config, overrides), progress=False)
            seconds = time.perf_counter() - start
            panacea = panacea or out / "panacea"
            for stats in result.rounds:
                rows.append((seed, judge, stats, seconds))
            print_table(rows)


def print_table(rows) -> None:
    print(
        "\n| seed | judge | round | pairs tried | survivors | acceptance | new pairs | steps "
        "| HV before | HV after | Δ HV | IP before | IP after | wall s |"
    )
    print("|" + "---|" * 14)
    for seed, judge, s, seconds in rows:
        print(
            f"| {seed} | {judge} | {s['round']} | {s['pairs_tried']} | {s['survivors']} "
            f"| {s['acceptance_rate']:.1%} | {s['new_pairs']} | {s['realign_steps']} "
            f"| {s['hypervolume_before']:.4f} | {s['hypervolume_after']:.4f} "
            f"| {s['hypervolume_after'] - s['hypervolume_before']:+.4f} "
            f"| {s['inner_product_before']:.4f} | {s['inner_product_after']:.4f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
