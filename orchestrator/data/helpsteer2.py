"""HelpSteer2 (per-response attribute scores) → the canonical pair schema.

Each row holds a prompt, one response and its scores (0–4) on helpfulness, correctness,
coherence, complexity and verbosity; a prompt's rows are its candidate responses. Every two
responses of a prompt make a pair, labelled per objective by the better score (a tie where they
are equal), with both scores kept. An objective reads the attribute column of its own name, or
the one `attributes` gives it; a column where lower is better is read negated, so that a higher
score is better on every objective.
"""

import math
from collections.abc import Mapping
from itertools import combinations

from orchestrator.config.sections import Attribute
from orchestrator.data.rows import load_rows
from orchestrator.data.schema import PairDataset, PreferencePair
from orchestrator.errors import MoaError

HUB_ID = "nvidia/HelpSteer2"
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def load_helpsteer2(
    source: str = HUB_ID,
    objectives: tuple[str, ...] = ATTRIBUTES,
    split: str = "train",
    attributes: Mapping[str, Attribute] = {},
) -> PairDataset:
    """Pairs of responses to the same prompt from `source` (a hub id, or a local file or folder:
    see data.rows.load_rows), labelled on `objectives`: attribute columns, or the columns
    `attributes` maps them to."""
    read = {name: attributes.get(name, Attribute(column=name)) for name in objectives}
    wanted = ("prompt", "response", *dict.fromkeys(a.column for a in read.values()))
    columns = load_rows(source, split, wanted, "a HelpSteer2 dataset")
    responses: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for i, prompt in enumerate(columns["prompt"]):
        where = f"{source}, row {i}"
        if not isinstance(prompt, str) or not isinstance(columns["response"][i], str):
            raise MoaError(f"{where}: fields 'prompt' and 'response' must be strings")
        scores = {
            name: _score(columns[a.column][i], f"{where}: field '{a.column}'")
            * (1 if a.higher_is_better else -1)
            for name, a in read.items()
        }
        responses.setdefault(prompt, []).append((columns["response"][i], scores))
    pairs = [
        _pair(prompt, a, b, objectives)
        for prompt, candidates in responses.items()
        for a, b in combinations(candidates, 2)
    ]
    if not pairs:
        raise MoaError(f"{source} (split {split!r}): no prompt has two responses to pair")
    return PairDataset(tuple(objectives), pairs)


def _score(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise MoaError(f"{where} must be a number; got {value!r}")
    return float(value)


def _pair(prompt: str, a: tuple, b: tuple, objectives: tuple[str, ...]) -> PreferencePair:
    (response_a, scores_a), (response_b, scores_b) = a, b
    labels = {name: _label(scores_a[name], scores_b[name]) for name in objectives}
    scores = {name: (scores_a[name], scores_b[name]) for name in objectives}
    return PreferencePair(prompt, response_a, response_b, labels, scores)


def _label(score_a: float, score_b: float) -> str:
    if score_a == score_b:
        return "tie"
    return "a" if score_a > score_b else "b"
