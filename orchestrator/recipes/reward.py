"""`moa reward`: per-objective reward models trained on the training pairs' labels with the
Bradley–Terry loss (ties left out), on Ray Train, then measured on the test split's pairs.

  config.yaml, metrics.jsonl, tensorboard/, checkpoints/, logs/   as for every training run
  reward_model/    the reward model(s), `save_pretrained` (see model/reward_model.py)
  accuracy.json    per objective: test pairs that are not ties, and the fraction ordered right
  report.md        the same as a table
  train.json       the training's wall time, written once the model is done

A stopped run continues from its last checkpoint with `moa reward --resume RUN_DIR`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from orchestrator.algorithms.reward_model import correct_orders, pair_rewards
from orchestrator.atomic import atomic_write_text
from orchestrator.config import RunConfig, with_fields
from orchestrator.data.encoding import collate_pairs, encode_pairs
from orchestrator.data.schema import PairDataset
from orchestrator.data.sources import load_pairs
from orchestrator.distributed.train import train
from orchestrator.errors import MoaError
from orchestrator.model.loading import load_tokenizer
from orchestrator.model.reward_model import REWARD_MODEL, RewardModel, load_reward_model
from orchestrator.recipes.inputs import check_training_inputs
from orchestrator.recipes.run_folder import TRAINED, TRAINING_RUN, RunKind, open_run, start_run
from orchestrator.training.loop import train_reward_rank
from orchestrator.training.metrics_log import read_metrics

# A training run's folder without a policy's outputs (best/, adapter/, eval/), with its own.
POLICY_OUTPUTS = ("best", "adapter", "eval")
REWARD_RUN = RunKind(
    "reward-model run",
    ("model", "data", "train", "scaling", "checkpoint", "logging", "reward"),
    (
        *(name for name in TRAINING_RUN.outputs if name not in POLICY_OUTPUTS),
        REWARD_MODEL,
        "accuracy.json",
        "report.md",
    ),
    command="reward",
)


@dataclass
class RewardResult:
    run_dir: Path
    accuracy: dict[str, dict]  # objective → {"pairs": non-tie test pairs, "accuracy": fraction}
    history: list[dict]
    train_seconds: float


def run_reward(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False) -> RewardResult:
    pairs, held_out = check_reward_inputs(cfg)
    start_run(cfg, REWARD_RUN, overwrite)
    return ensure_reward(cfg, pairs, held_out, progress=progress)


def resume_reward(run_dir: str | Path, *, progress: bool = True) -> RewardResult:
    cfg = open_run(run_dir)
    return ensure_reward(cfg, *check_reward_inputs(cfg), progress=progress)


def check_reward_inputs(cfg: RunConfig) -> tuple[PairDataset, PairDataset]:
    """(training pairs, test pairs), once the inputs are checked: each objective needs pairs
    that are not ties in both."""
    # A reward run is measured by its pairwise accuracy, not by a front: eval.* play no part.
    pairs = check_training_inputs(with_fields(cfg, {"eval.enabled": False}))
    try:
        held_out = load_pairs(cfg.data, "test", cfg.reward.held_out_pairs)
    except MoaError as err:
        raise MoaError(f"data: {err}") from None
    objectives = cfg.data.objectives
    for name, dataset in (("training", pairs), ("test", held_out)):
        signs = [pair.signs(objectives) for pair in dataset]
        untied = {o for row in signs for o, s in zip(objectives, row, strict=True) if s}
        missing = [o for o in objectives if o not in untied]
        if missing:
            raise MoaError(
                f"data: the {name} pairs have no pair that is not a tie on {missing}; a reward "
                "model learns and is measured on pairs one response of which is preferred"
            )
    return pairs, held_out


def ensure_reward(
    cfg: RunConfig, pairs: PairDataset, held_out: PairDataset, *, progress: bool = True
) -> RewardResult:
    run_dir = Path(cfg.output_dir)
    record = run_dir / TRAINED
    if not record.is_file():
        seconds = train(
            cfg, run_dir, pairs, progress=progress, rank_loop=train_reward_rank, command="reward"
        )
        accuracy = held_out_accuracy(cfg, load_reward_model(run_dir / REWARD_MODEL), held_out)
        atomic_write_text(run_dir / "accuracy.json", json.dumps(accuracy, indent=2))
        atomic_write_text(run_dir / "report.md", render_report(cfg, accuracy))
        atomic_write_text(record, json.dumps({"train_seconds": seconds}))
    accuracy = json.loads((run_dir / "accuracy.json").read_text())
    seconds = json.loads(record.read_text())["train_seconds"]
    return RewardResult(run_dir, accuracy, read_metrics(run_dir), seconds)


@torch.no_grad()
def held_out_accuracy(cfg: RunConfig, model: RewardModel, pairs: PairDataset) -> dict[str, dict]:
    """Per objective: how many of `pairs` are not ties, and the fraction whose preferred response
    the reward model scores higher."""
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    data = cfg.data
    encoded = encode_pairs(tokenizer, pairs, data.max_prompt_tokens, data.max_response_tokens)
    model.eval()
    right = counted = 0
    for i in range(0, len(encoded), cfg.train.batch_size):
        batch = collate_pairs(encoded[i : i + cfg.train.batch_size], tokenizer.pad_token_id)
        rewards_a, rewards_b = pair_rewards(model, batch)
        r, n = correct_orders(rewards_a, rewards_b, batch["signs"])
        right, counted = right + r, counted + n
    return {
        name: {"pairs": int(n), "accuracy": float(r) / max(int(n), 1)}
        for name, r, n in zip(data.objectives, right, counted, strict=True)
    }


def render_report(cfg: RunConfig, accuracy: dict[str, dict]) -> str:
    layout = "one model per objective" if cfg.reward.per_objective else "one backbone, m heads"
    lines = [
        "# Reward models",
        "",
        f"{cfg.model.name_or_path} ({layout}), {cfg.train.max_steps} steps of "
        f"{cfg.global_batch} pairs; pairwise accuracy on the test split's pairs that are not "
        "ties.",
        "",
        "| objective | test pairs | accuracy |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {a['pairs']} | {a['accuracy']:.3f} |" for name, a in accuracy.items()]
    return "\n".join(lines) + "\n"
