"""Answering a λ grid with methods whose models do not take λ per row: one model per λ (DPS,
MODPO), a soup of experts merged per λ, one fixed model for every λ (SPO).

Each is an Answerer for evaluate_front: the rows are grouped by λ, the model is set up for that
λ (`setup(λ)` is a context manager that yields the λ to run the adapter at, or None when it is
switched off), and each group is generated in batches.
"""

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import torch
from torch import nn

from orchestrator.algorithms.soups import Deltas, merged, soup_delta
from orchestrator.config import RunConfig
from orchestrator.errors import MoaError
from orchestrator.evaluation.front import Answerer
from orchestrator.model.adapter_io import load_adapter
from orchestrator.model.generate import generate

Key = tuple[float, ...]
Setup = Callable[[Key], AbstractContextManager[Sequence[float] | None]]


def grouped_answerer(model: nn.Module, tokenizer, setup: Setup, cfg: RunConfig) -> Answerer:
    """Rows grouped by λ, each group answered by the model as `setup` prepares it, in batches
    of eval.batch_size."""

    def answer(prompts, preferences, params) -> list[str]:
        keys = [preference_key(row) for row in preferences]
        answers: list[str | None] = [None] * len(prompts)
        for key in dict.fromkeys(keys):
            rows = [i for i, k in enumerate(keys) if k == key]
            with setup(key) as run_at:
                texts = generate(
                    model,
                    tokenizer,
                    [prompts[i] for i in rows],
                    None if run_at is None else torch.tensor(run_at),
                    [params[i] for i in rows],
                    batch_size=cfg.eval.batch_size,
                    max_prompt_tokens=cfg.data.max_prompt_tokens,
                )
            for row, text in zip(rows, texts, strict=True):
                answers[row] = text
        return answers

    return answer


def one_model_per_preference(model: nn.Module, adapters: Mapping[Key, tuple[Path, Key]]) -> Setup:
    """λ → (adapter folder, the λ that adapter was trained at)."""

    @contextmanager
    def setup(key: Key):
        if key not in adapters:
            raise MoaError(f"no model was trained for λ = {list(key)}")
        directory, trained_at = adapters[key]
        load_adapter(model, directory)
        yield trained_at

    return setup


def one_model(model: nn.Module, adapter: Path, trained_at: Key) -> Setup:
    """The same adapter, at the λ it was trained at, for every λ."""

    @contextmanager
    def setup(key: Key):
        load_adapter(model, adapter)
        yield trained_at

    return setup


def soup(model: nn.Module, deltas: Sequence[Deltas]) -> Setup:
    """The experts' updates interpolated by λ and merged into the base weights."""

    @contextmanager
    def setup(key: Key):
        with merged(model, soup_delta(deltas, key)):
            yield None

    return setup


def preference_key(row) -> Key:
    """λ as a hashable key (rounded, so grid rows and config lists meet)."""
    return tuple(round(float(x), 6) for x in row)
