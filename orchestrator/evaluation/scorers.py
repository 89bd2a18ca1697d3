"""Each objective's scorer of (prompt, response) rows, as eval.scorers configures them: the built-in
task's ground truth, one output of a reward (or cost) model, or the implicit reward of the model
being scored. Fronts, model selection, sweeps and comparisons score through `Scorers`; a
generation pool runs the same on its actors (GenerationPool.score)."""

from collections.abc import Mapping, Sequence

import numpy as np

from orchestrator.config import RunConfig
from orchestrator.config.sections import RewardModelScorer, Scorer
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.errors import MoaError
from orchestrator.rewards.implicit import implicit_rewards
from orchestrator.rewards.reward_models import Classifier, classifier_head


def check_scorers(cfg: RunConfig) -> None:
    """cfg.scorers fit a run that evaluates fronts: ground truth only on the built-in task, and
    every reward model loadable. Run on the driver before any worker starts."""
    if cfg.data.source != "assistant":
        for name, scorer in cfg.scorers.items():
            if scorer != "ground_truth":
                continue
            problem = (
                f"eval.scorers.{name}: ground_truth needs the built-in task (data.source: "
                "assistant)"
                if name in cfg.eval.scorers
                else f"objective {name!r} has no scorer (eval.scorers.{name})"
            )
            raise MoaError(
                f"{problem}; data.source {cfg.data.source!r} has no ground truth: set "
                f"eval.scorers.{name} to a reward model ({{model: PATH}}) or implicit, or set "
                "eval.enabled: false"
            )
    check_reward_models(cfg.scorers, "eval.scorers")


def check_reward_models(scorers: Mapping[str, Scorer], field: str) -> None:
    """Every reward-model scorer of `scorers` (the config field `field`) names a loadable
    classifier and one of its outputs, read from its config alone."""
    for name, scorer in scorers.items():
        if isinstance(scorer, RewardModelScorer):
            classifier_head(scorer, f"{field}.{name}")


class Scorers:
    """scorers(prompts, responses) → [N, m] scores, a column per objective in `scorers`' order.

    `policy`: (model, tokenizer) whose implicit rewards the "implicit" scorers read, the model
    the rows came from. Reward models are loaded once each, on `device`.
    """

    def __init__(
        self,
        scorers: Mapping[str, Scorer],
        *,
        policy=None,
        implicit_beta: float = 0.1,
        device: str = "cpu",
        batch_size: int = 32,
        max_prompt_tokens: int = 256,
        max_response_tokens: int = 512,
    ):
        self.scorers = dict(scorers)
        if "implicit" in self.scorers.values() and policy is None:
            raise MoaError("an implicit scorer needs the model being scored (policy)")
        self.policy, self.implicit_beta = policy, implicit_beta
        self.lengths = {
            "max_prompt_tokens": max_prompt_tokens,
            "max_response_tokens": max_response_tokens,
            "batch_size": batch_size,
        }
        self.heads = {
            name: classifier_head(scorer, f"eval.scorers.{name}")
            for name, scorer in self.scorers.items()
            if isinstance(scorer, RewardModelScorer)
        }
        self.classifiers = {
            path: Classifier(path, device, **self.lengths) for path, _ in self.heads.values()
        }
        self.task = AssistantTask()  # ground truth: a pure function of (prompt, response)

    @staticmethod
    def arguments_for_run(
        cfg: RunConfig, scorers: Mapping[str, Scorer] | None = None, max_new_tokens: int = 0
    ) -> dict:
        """The arguments (but policy and device) of a run's scorers (default: eval.scorers) of
        answers of up to `max_new_tokens` (default eval.max_new_tokens)."""
        return {
            "scorers": dict(scorers or cfg.scorers),
            "implicit_beta": cfg.eval.implicit_beta,
            "batch_size": cfg.eval.batch_size,
            "max_prompt_tokens": cfg.data.max_prompt_tokens,
            # the answer and EOS
            "max_response_tokens": (max_new_tokens or cfg.eval.max_new_tokens) + 1,
        }

    @classmethod
    def for_run(cls, cfg: RunConfig, policy=None, device: str = "cpu") -> "Scorers":
        return cls(**cls.arguments_for_run(cfg), policy=policy, device=device)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        prompts, responses = list(prompts), list(responses)
        outputs = {path: model(prompts, responses) for path, model in self.classifiers.items()}
        implicit = None
        if "implicit" in self.scorers.values():
            model, tokenizer = self.policy
            implicit = implicit_rewards(
                model, tokenizer, prompts, responses, beta=self.implicit_beta, **self.lengths
            )
        columns = []
        for i, (name, scorer) in enumerate(self.scorers.items()):
            if scorer == "ground_truth":
                columns.append(self.task.score_batch(prompts, responses, [name])[:, 0])
            elif scorer == "implicit":
                columns.append(implicit[:, i])  # the adapter's objectives are in this order
            else:
                path, head = self.heads[name]
                raw = outputs[path][:, head]
                columns.append(scorer.sign * (raw - scorer.offset) / scorer.scale)
        return np.stack(columns, axis=-1) if columns else np.zeros((len(prompts), 0))
