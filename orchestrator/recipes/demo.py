"""`moa demo`: train the tiny built-in model on helpful vs harmless through Ray Train on a local
Ray instance, and show its front."""

import os

import torch

from orchestrator.config import RunConfig, load_config
from orchestrator.data.assistant_task import AssistantTask, topic_of
from orchestrator.errors import MoaError
from orchestrator.evaluation.report import summary_lines
from orchestrator.model.generate import generate
from orchestrator.model.sampling import SamplingParams
from orchestrator.recipes.panacea import RunResult, run_panacea

QUICK_OVERRIDES = [
    "model.name_or_path=builtin:tiny-quick",
    "data.num_pairs=256",
    "train.max_steps=12",
    "train.warmup_steps=2",
    "eval.num_prompts=8",
    "eval.grid_divisions=4",
    "eval.max_new_tokens=48",
]


def run_demo(output_dir: str, quick: bool = False, overrides: list[str] = ()) -> RunResult:
    base = QUICK_OVERRIDES if quick else []
    # One Ray Train worker, then one generation actor, with every core of this machine.
    cores = os.cpu_count() or 1
    machine = [f"scaling.cpus_per_worker={cores}", f"generation.cpus_per_actor={cores}"]
    cfg = load_config(None, [*base, *machine, f"output_dir={output_dir}", *overrides])
    if not cfg.eval.enabled:
        raise MoaError("moa demo shows the front, so it needs eval.enabled: true")
    result = run_panacea(cfg, overwrite=True)
    print(summary(cfg, result))
    return result


def summary(cfg: RunConfig, result: RunResult) -> str:
    front = result.front
    names = front.objectives
    lambdas = ["(" + ", ".join(f"{x:.2f}" for x in lam) + ")" for lam in front.preferences]
    width = max(len(text) for text in lambdas)
    lines = ["", f"{'λ':>{width}} | " + " | ".join(f"{n:>9}" for n in names)]
    for lam_text, point in zip(lambdas, front.points, strict=True):
        lines.append(f"{lam_text:>{width}} | " + " | ".join(f"{x:9.3f}" for x in point))
    lines += [
        "",
        *summary_lines(front),
        f"training: {cfg.train.max_steps} steps in {result.train_seconds:.0f} s",
        f"run folder: {result.run_dir}  (front: {result.run_dir / 'eval' / 'front.png'})",
        "",
        *sample_answers(cfg, result),
    ]
    return "\n".join(lines)


def sample_answers(cfg: RunConfig, result: RunResult) -> list[str]:
    """Answers to one held-out hazardous question at the first vertex, the centre, the others."""
    m = len(cfg.data.objectives)
    preferences = torch.cat([torch.eye(m)[:1], torch.full((1, m), 1 / m), torch.eye(m)[1:]])
    prompt = next(p for p in AssistantTask().prompts("test") if topic_of(p).hazardous)
    answers = generate(
        result.model,
        result.tokenizer,
        [prompt] * len(preferences),
        preferences,
        SamplingParams(max_new_tokens=cfg.eval.max_new_tokens),
    )
    lines = [f"Q: {prompt}"]
    for lam, answer in zip(preferences.tolist(), answers, strict=True):
        lines.append(f"  λ = ({', '.join(f'{x:.2f}' for x in lam)}): {answer}")
    return lines
