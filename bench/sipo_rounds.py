"""SIPO after Panacea-DPO on the built-in task: the hypervolume before and after each round, per
seed, judge and re-alignment λ, on the same λ grid, test prompts and reference point (the
config's eval section).

    python bench/sipo_rounds.py --seeds 0,1,2 --judges implicit,ground_truth \
        --realign-at sampled,generated

Each seed trains Panacea once (train.seed = sipo.seed = seed) in its first run; the other runs of
the seed start from that same Panacea run (sipo.init_from), so they differ only in the judge and
in the λ the new pairs train at (sipo.realign_at). The runs of one judge share round 1's
candidates and selection, which depend only on the starting adapter and the judge: a later
variant starts from a copy of the first one's. A run folder that is already there is resumed
(finished rounds are read back), so a stopped benchmark continues where it was.
"""

import argparse
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from orchestrator.config import load_config
from orchestrator.recipes.sipo import ensure_sipo, resume_sipo, run_sipo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="jobs/sipo_tiny.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--judges", default="implicit")
    parser.add_argument("--realign-at", default="sampled", help="sampled, generated or both")
    parser.add_argument("--output-dir", default="runs/bench-sipo")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        panacea = None
        for judge in args.judges.split(","):
            first = None
            for realign_at in args.realign_at.split(","):
                out = Path(args.output_dir) / f"seed{seed}-{judge}-{realign_at}"
                overrides = [
                    f"train.seed={seed}",
                    f"sipo.seed={seed}",
                    f"sipo.judge={judge}",
                    f"sipo.realign_at={realign_at}",
                    f"output_dir={out}",
                    *args.overrides,
                ]
                if panacea is not None:
                    overrides.append(f"sipo.init_from={panacea}")
                start = time.perf_counter()
                if (out / "config.yaml").is_file():  # continue an earlier, stopped benchmark
                    result = resume_sipo(out, progress=False)
                else:
                    cfg = load_config(args.config, overrides)
                    if first is None:
                        result = run_sipo(cfg, progress=False)
                    else:  # a folder without config.yaml is taken as it is
                        share_selection(first, out)
                        result = ensure_sipo(cfg, progress=False)
                seconds = time.perf_counter() - start
                panacea = panacea or out / "panacea"
                first = first or out
                for stats in result.rounds:
                    rows.append((seed, judge, realign_at, stats, seconds))
                print_table(rows)


def share_selection(source: Path, out: Path) -> None:
    """Round 1's candidates and selection of `source` into the new run `out` (the same starting
    adapter and judge give the same ones), so that only its re-alignment runs."""
    (out / "round_1").mkdir(parents=True)
    for name in ("candidates.jsonl", "selection.json", "pairs.jsonl"):
        shutil.copy2(source / "round_1" / name, out / "round_1" / name)


def print_table(rows) -> None:
    print(
        "\n| seed | judge | re-aligned at | round | pairs tried | survivors | acceptance "
        "| new pairs | steps | HV before | HV after | Δ HV | IP before | IP after | wall s |"
    )
    print("|" + "---|" * 15)
    for seed, judge, realign_at, s, seconds in rows:
        print(
            f"| {seed} | {judge} | {realign_at} | {s['round']} | {s['pairs_tried']} "
            f"| {s['survivors']} "
            f"| {s['acceptance_rate']:.1%} | {s['new_pairs']} | {s['realign_steps']} "
            f"| {s['hypervolume_before']:.4f} | {s['hypervolume_after']:.4f} "
            f"| {s['hypervolume_after'] - s['hypervolume_before']:+.4f} "
            f"| {s['inner_product_before']:.4f} | {s['inner_product_after']:.4f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
