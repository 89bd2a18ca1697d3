"""How many of the candidates a SIPO round's judges kept really beat both original responses on
every objective, by the built-in task's exact scorers, and the λ they were generated at.

    python bench/sipo_judge_precision.py runs/bench-sipo-rm/seed0-reward_models-sampled 1
"""

import argparse
import json
from collections import Counter
from pathlib import Path

from orchestrator.algorithms.sipo import pairs_to_improve
from orchestrator.config import load_config
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.sources import load_training_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a SIPO run folder on the built-in task")
    parser.add_argument("round", type=int)
    args = parser.parse_args()
    run = Path(args.run_dir)
    cfg = load_config(run / "config.yaml")
    task, objectives = AssistantTask(seed=cfg.data.seed), cfg.data.objectives
    lines = (run / f"round_{args.round}" / "candidates.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    pairs = load_training_pairs(cfg.data)
    tried = pairs_to_improve(pairs, cfg.sipo.max_pairs, cfg.sipo.seed, args.round)
    per_pair = len(records[0]["candidates"])
    better, origins = 0, Counter()
    for i, (pair, record) in enumerate(zip(tried, records, strict=True)):
        assert pair.prompt == record["prompt"]
        if record["kept"] is None:
            continue
        kept = record["candidates"][record["kept"] - i * per_pair]  # kept: its row in the plan
        answers = [kept["answer"], pair.response_a, pair.response_b]
        new, a, b = task.score_batch([pair.prompt] * 3, answers, objectives)
        better += all(new[j] > a[j] and new[j] > b[j] for j in range(len(objectives)))
        origins[tuple(kept["preference"])] += 1
    total = sum(origins.values())
    print(
        f"kept {total}; better than both originals on every objective: {better} "
        f"({better / max(1, total):.0%}); generated at λ {dict(sorted(origins.items()))}"
    )


if __name__ == "__main__":
    main()
