"""A run's front, as its config describes it: the λ grid, the held-out prompts of a split of its
data, the sampling, its scorers (eval.scorers) and the reference point (eval.*)."""

import torch

from orchestrator.config import RunConfig
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.sources import load_pairs
from orchestrator.evaluation.front import (
    Answerer,
    Front,
    Score,
    evaluate_base_point,
    evaluate_front,
)
from orchestrator.evaluation.scorers import Scorers
from orchestrator.model.sampling import SamplingParams
from orchestrator.objectives.grid import simplex_grid


def split_prompts(cfg: RunConfig, split: str, num_prompts: int | None = None) -> list[str]:
    """The first `num_prompts` (default eval.num_prompts) held-out prompts of `split`
    ("validation" or "test"): the built-in task's, or those of the dataset's pairs in that split,
    each once. The prompts a front over that split is measured on."""
    if cfg.data.source == "assistant":
        prompts = AssistantTask(seed=cfg.data.seed).prompts(split)
    else:
        prompts = list(dict.fromkeys(pair.prompt for pair in load_pairs(cfg.data, split)))
    return prompts[: num_prompts or cfg.eval.num_prompts]


def reference_point(cfg: RunConfig) -> list[float]:
    """eval.reference_point; ground-truth scores lie in [0, 1], so 0 each by default (RunConfig
    asks for one whenever another scorer is configured)."""
    return cfg.eval.reference_point or [0.0] * len(cfg.data.objectives)


def evaluate_on_grid(
    cfg: RunConfig,
    model,
    tokenizer,
    divisions: int | None = None,
    prompts: list[str] | None = None,
    with_base: bool = True,
    answer: Answerer | None = None,
    score: Score | None = None,
) -> Front:
    """The front over the λ grid of `divisions` (default eval.grid_divisions) on `prompts`
    (default: split_prompts(cfg, "test"), the reported fronts'; selection passes validation
    prompts), with the base model's point unless `with_base` is false. `answer`: where the grid
    is generated, `score`: where it is scored (default: `model` and the run's scorers, here; a
    generation pool's answerer() and scorer() spread both over actors)."""
    ev = cfg.eval
    objectives = cfg.data.objectives
    prompts = prompts if prompts is not None else split_prompts(cfg, "test")
    score = score or Scorers.for_run(cfg, policy=(model, tokenizer))
    sampling = SamplingParams(
        max_new_tokens=ev.max_new_tokens, temperature=ev.temperature, top_p=ev.top_p, seed=ev.seed
    )
    options = {
        "sampling": sampling,
        "answers_per_prompt": ev.answers_per_prompt,
        "max_prompt_tokens": cfg.data.max_prompt_tokens,
        "batch_size": ev.batch_size,
    }
    grid = simplex_grid(len(objectives), divisions or ev.grid_divisions, dtype=torch.float64)
    front = evaluate_front(
        model,
        tokenizer,
        score,
        objectives,
        grid,
        prompts,
        reference_point=reference_point(cfg),
        answer=answer,
        **options,
    )
    if with_base:
        front.base_point = evaluate_base_point(model, tokenizer, score, prompts, **options)
    return front
