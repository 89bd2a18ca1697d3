"""How far a front judged by reward models agrees with the ground-truth front of the same adapter
on the built-in task: the adapter answers the λ grid once on the test prompts; the answers are
scored by the task's exact scorers and by the reward models; per objective, the Spearman rank
correlation of the two over the grid points, and both hypervolumes (the ground truth's from 0,
the reward models' from the reference point given).

  moa demo                          # runs/demo: the Panacea adapter
  moa reward jobs/reward_tiny.yaml  # runs/reward-tiny: helpful and harmless heads
  python bench/scorer_agreement.py runs/demo runs/reward-tiny/reward_model [--reference -10 -10]
"""

import argparse

from scipy.stats import spearmanr

from orchestrator.config import with_fields
from orchestrator.config.sections import RewardModelScorer
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.run_front import evaluate_on_grid
from orchestrator.evaluation.scorers import Scorers
from orchestrator.recipes.run_folder import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a Panacea run folder on the built-in task")
    parser.add_argument("reward_models", help="a reward model with a head per objective")
    parser.add_argument("--reference", type=float, nargs="+", default=None)
    args = parser.parse_args()
    cfg, tokenizer, model = load_trained(args.run_dir)
    objectives = cfg.data.objectives
    reference = args.reference or [-10.0] * len(objectives)
    judges = {o: RewardModelScorer(model=args.reward_models, head=o) for o in objectives}
    rm_cfg = with_fields(cfg, {"eval.scorers": judges, "eval.reference_point": reference})
    answers: list[tuple] = []  # the grid's rows, kept to score them a second time

    def ground_truth(prompts, responses):
        answers.append((list(prompts), list(responses)))
        return Scorers.for_run(cfg)(prompts, responses)

    truth = evaluate_on_grid(cfg, model, tokenizer, with_base=False, score=ground_truth)
    judged = Scorers.for_run(rm_cfg)
    rm_front = rescored(truth, answers, judged, reference)
    per_point = len(answers[0][0]) // len(truth.points)
    print(f"{args.run_dir}: {len(truth.points)} λ points × {per_point} test prompts\n")
    print("| λ | " + " | ".join(f"{o}: truth | {o}: reward model" for o in objectives) + " |")
    print("|---|" + "---|---|" * len(objectives))
    for lam, t, r in zip(truth.preferences, truth.points, rm_front.points, strict=True):
        cells = [f"{a:.3f} | {b:+.3f}" for a, b in zip(t, r, strict=True)]
        print(f"| ({', '.join(f'{x:.1f}' for x in lam)}) | " + " | ".join(cells) + " |")
    print("\n| objective | Spearman over the λ grid |")
    print("|---|---|")
    for i, name in enumerate(objectives):
        rho = spearmanr(truth.points[:, i], rm_front.points[:, i]).statistic
        print(f"| {name} | {rho:.3f} |")
    print(
        f"\nhypervolume: ground truth {truth.metrics()['hypervolume']:.4f} (from 0); reward "
        f"models {rm_front.metrics()['hypervolume']:.4f} (from {reference})"
    )


def rescored(truth: Front, answers: list[tuple], judged: Scorers, reference) -> Front:
    """`truth`'s front with the same answers scored by `judged`: each λ's mean score."""
    [(prompts, responses)] = answers
    m = truth.points.shape[1]
    scores = judged(prompts, responses).reshape(len(truth.points), -1, m)
    return Front(truth.objectives, truth.preferences, scores.mean(axis=1), list(reference))


if __name__ == "__main__":
    main()
