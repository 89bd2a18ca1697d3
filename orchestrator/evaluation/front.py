"""The front of a steerable model: generate at every λ of a grid, score, average, measure.

All (λ, prompt) rows go through one batched generation with a preference per row.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from orchestrator.evaluation.metrics import hypervolume, inner_product, spacing, sparsity
from orchestrator.model.generate import generate
from orchestrator.model.sampling import SamplingParams
from orchestrator.model.svd_lora import adapter_disabled, has_svd_lora, svd_lora_config

GREEDY = SamplingParams(max_new_tokens=96)
# answer(prompts, preferences [rows, m], sampling params per row) → one answer per row
Answerer = Callable[[list[str], torch.Tensor, list[SamplingParams]], list[str]]
# score(prompts, answers) → [rows, m] scores (evaluation.scorers.Scorers, or a pool's)
Score = Callable[[list[str], list[str]], np.ndarray]


@dataclass
class Front:
    objectives: tuple[str, ...]
    preferences: np.ndarray  # [N, m]
    points: np.ndarray  # [N, m]: mean score per objective at each λ
    reference_point: list[float]
    samples: list[dict] = field(default_factory=list)  # a few (prompt, λ, answer) for reading
    base_point: np.ndarray | None = None  # the base model's scores, to compare against

    def metrics(self) -> dict[str, float]:
        result = {
            "hypervolume": hypervolume(self.points, self.reference_point),
            "inner_product": inner_product(self.preferences, self.points),
            "sparsity": sparsity(self.points),
            "spacing": spacing(self.points),
        }
        for i, name in enumerate(self.objectives):
            result[f"spearman_{name}"] = steerability(self.preferences[:, i], self.points[:, i])
        if self.base_point is not None:
            result["base_hypervolume"] = hypervolume([self.base_point], self.reference_point)
        return result

    def to_dict(self) -> dict:
        return {
            "objectives": list(self.objectives),
            "reference_point": list(self.reference_point),
            "points": [
                {
                    "preference": lam.tolist(),
                    "scores": dict(zip(self.objectives, p.tolist(), strict=True)),
                }
                for lam, p in zip(self.preferences, self.points, strict=True)
            ],
            "base_point": None
            if self.base_point is None
            else dict(zip(self.objectives, self.base_point.tolist(), strict=True)),
            "metrics": self.metrics(),
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Front":
        """The front `to_dict` wrote (front.json)."""
        objectives = tuple(data["objectives"])
        base = data.get("base_point")
        return cls(
            objectives,
            np.array([p["preference"] for p in data["points"]], dtype=np.float64),
            np.array([[p["scores"][n] for n in objectives] for p in data["points"]]),
            list(data["reference_point"]),
            list(data.get("samples", [])),
            None if base is None else np.array([base[n] for n in objectives]),
        )


def steerability(weights: np.ndarray, scores: np.ndarray) -> float:
    """Spearman rank correlation of an objective's weight λ_i with its score (1: steerable)."""
    from scipy.stats import spearmanr  # here: scipy.stats costs every Ray Train worker 0.5 s

    if np.ptp(weights) == 0 or np.ptp(scores) == 0:
        return 0.0
    return float(spearmanr(weights, scores).statistic)


def evaluate_front(
    model: nn.Module,
    tokenizer,
    score: Score,
    objectives: Sequence[str],
    grid: torch.Tensor,
    prompts: Sequence[str],
    *,
    reference_point: Sequence[float],
    sampling: SamplingParams = GREEDY,
    answers_per_prompt: int = 1,
    max_prompt_tokens: int = 256,
    batch_size: int = 128,
    samples_per_point: int = 1,
    answer: Answerer | None = None,
) -> Front:
    """One point per λ of `grid`: the mean scores of the answers to `prompts` at that λ.

    Greedy by default; with a sampling temperature, each prompt is answered
    `answers_per_prompt` times and the point estimates the expected scores of the policy at λ.
    `samples_per_point` answers per λ are kept for reading. `answer` generates the rows (default:
    `model` in this process; a generation pool's `pool.answerer()` spreads them over actors).
    A model trained at one λ (its adapter's trained_at) answers every row at that λ, as its
    recipe runs it: at any other λ its untrained columns would switch on.
    """
    per_point = len(prompts) * answers_per_prompt
    rows_lam = grid.repeat_interleave(per_point, dim=0)
    trained_at = svd_lora_config(model).trained_at if has_svd_lora(model) else None
    answered_at = rows_lam
    if trained_at is not None:
        answered_at = torch.tensor(trained_at, dtype=grid.dtype).expand_as(rows_lam)
    rows_prompts, answers = _answer(
        model,
        tokenizer,
        list(prompts) * len(grid),
        answered_at,
        sampling,
        answers_per_prompt,
        max_prompt_tokens,
        batch_size,
        answer,
    )
    scores = score(rows_prompts, answers)
    points = scores.reshape(len(grid), per_point, len(objectives)).mean(axis=1)
    samples = [
        {"preference": rows_lam[i].tolist(), "prompt": rows_prompts[i], "answer": answers[i]}
        for point in range(len(grid))
        for i in range(point * per_point, point * per_point + samples_per_point)
    ]
    return Front(
        tuple(objectives),
        grid.numpy().astype(np.float64),
        points,
        list(reference_point),
        samples,
    )


def evaluate_base_point(
    model: nn.Module,
    tokenizer,
    score: Score,
    prompts: Sequence[str],
    *,
    sampling: SamplingParams = GREEDY,
    answers_per_prompt: int = 1,
    max_prompt_tokens: int = 256,
    batch_size: int = 128,
) -> np.ndarray:
    """The base model's single point (the adapter switched off while it answers): what Panacea
    starts from."""
    with adapter_disabled(model):
        rows_prompts, answers = _answer(
            model,
            tokenizer,
            prompts,
            None,
            sampling,
            answers_per_prompt,
            max_prompt_tokens,
            batch_size,
            None,
        )
    return score(rows_prompts, answers).mean(axis=0)


def _answer(
    model,
    tokenizer,
    prompts,
    preferences,
    sampling,
    answers_per_prompt,
    max_prompt_tokens,
    batch_size,
    answer,
) -> tuple[list[str], list[str]]:
    """(prompt of each row, its answer): every prompt answered
    `answers_per_prompt` times in a row, at its row of `preferences` (already one per row).
    Row i samples with seed `sampling.seed + i`, wherever it is generated."""
    rows_prompts = [p for p in prompts for _ in range(answers_per_prompt)]
    params = [replace(sampling, seed=sampling.seed + i) for i in range(len(rows_prompts))]
    if answer is None:
        answers = generate(
            model,
            tokenizer,
            rows_prompts,
            preferences,
            params,
            batch_size=batch_size,
            max_prompt_tokens=max_prompt_tokens,
            progress=True,
        )
    else:
        answers = answer(rows_prompts, preferences, params)
    return rows_prompts, answers
