"""A run's front on the built-in task, as its config describes it: the λ grid, the held-out
prompts of a split, the sampling and the reference point (eval.*)."""

import torch

from orchestrator.config import RunConfig
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.errors import MoaError
from orchestrator.evaluation.front import Answerer, Front, evaluate_base_point, evaluate_front
from orchestrator.model.generate import SamplingParams
from orchestrator.objectives.grid import simplex_grid


def split_prompts(
    cfg: RunConfig, split: str, num_prompts: int | None = None, task: AssistantTask | None = None
) -> list[str]:
    """The first `num_prompts` (default eval.num_prompts) prompts of the built-in task's `split`:
    the prompts a front over that split is measured on."""
    task = task or AssistantTask(seed=cfg.data.seed)
    return task.prompts(split)[: num_prompts or cfg.eval.num_prompts]


def evaluate_on_grid(
    cfg: RunConfig,
    model,
    tokenizer,
    divisions: int | None = None,
    num_prompts: int | None = None,
    with_base: bool = True,
    answer: Answerer | None = None,
    split: str = "test",
) -> Front:
    """The front over the λ grid of `divisions` (default eval.grid_divisions) on the first
    `num_prompts` (default eval.num_prompts) prompts of `split` ("test" for the reported fronts,
    "validation" to select models), with the base model's point unless `with_base` is false.
    `answer`: where the grid is generated (default: `model`, here)."""
    if cfg.data.source != "assistant":
        raise MoaError(
            f"front evaluation needs the built-in task's scorers; this run trained on "
            f"data.source={cfg.data.source!r}"
        )
    ev = cfg.eval
    task = AssistantTask(seed=cfg.data.seed)
    objectives = cfg.data.objectives
    prompts = split_prompts(cfg, split, num_prompts, task)
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
        task,
        objectives,
        grid,
        prompts,
        reference_point=ev.reference_point,
        answer=answer,
        **options,
    )
    if with_base:
        front.base_point = evaluate_base_point(
            model, tokenizer, task, objectives, prompts, **options
        )
    return front
