"""The canonical preference-pair schema every dataset adapter produces.

A pair is (prompt, response_a, response_b) with, per objective, which response that objective
prefers: "a", "b" or "tie", and optionally both responses' scores. All objectives share the pair.
"""

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from orchestrator.atomic import atomic_write_text
from orchestrator.errors import MoaError

Label = Literal["a", "b", "tie"]
LABEL_SIGN: dict[str, int] = {"a": 1, "b": -1, "tie": 0}

# train: the pairs a model trains on; validation: prompts that select models (best/, sweeps);
# test: prompts the reported fronts are measured on.
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    response_a: str
    response_b: str
    labels: Mapping[str, Label]
    scores: Mapping[str, tuple[float, float]] | None = None
    # The λ this pair trains at, when it has one of its own (train.preference_per_pair): a SIPO
    # pair's is the λ its candidate was generated at.
    preference: tuple[float, ...] | None = None

    def signs(self, objectives: Sequence[str]) -> list[int]:
        """Per objective: +1 if it prefers response_a, −1 if response_b, 0 for a tie."""
        return [LABEL_SIGN[self.labels[name]] for name in objectives]

    def is_conflicting(self, objectives: Sequence[str]) -> bool:
        """Some objective prefers a while another prefers b (ties take no side)."""
        signs = set(self.signs(objectives))
        return 1 in signs and -1 in signs

    def to_record(self) -> dict:
        record = {
            "prompt": self.prompt,
            "response_a": self.response_a,
            "response_b": self.response_b,
            "labels": dict(self.labels),
        }
        if self.scores is not None:
            record["scores"] = {name: list(pair) for name, pair in self.scores.items()}
        if self.preference is not None:
            record["preference"] = list(self.preference)
        return record

    @classmethod
    def from_record(cls, record: Mapping, where: str = "record") -> "PreferencePair":
        for key in ("prompt", "response_a", "response_b"):
            if not isinstance(record.get(key), str):
                raise MoaError(f"{where}: field '{key}' must be a string; got {record.get(key)!r}")
        labels = record.get("labels")
        if not isinstance(labels, Mapping) or not labels:
            raise MoaError(
                f"{where}: field 'labels' must map each objective to 'a', 'b' or 'tie'; "
                f"got {labels!r}"
            )
        for name, label in labels.items():
            if label not in LABEL_SIGN:
                raise MoaError(
                    f"{where}: labels['{name}'] must be 'a', 'b' or 'tie'; got {label!r}"
                )
        scores = record.get("scores")
        if scores is not None:
            try:
                scores = {name: (float(s[0]), float(s[1])) for name, s in scores.items()}
            except (TypeError, ValueError, IndexError, AttributeError) as err:
                raise MoaError(
                    f"{where}: field 'scores' must map each objective to [score_a, score_b]"
                ) from err
        preference = record.get("preference")
        if preference is not None:
            if not isinstance(preference, list) or len(preference) != len(labels):
                raise MoaError(
                    f"{where}: field 'preference' must be a list of one weight per objective "
                    f"({len(labels)}); got {preference!r}"
                )
            preference = tuple(float(x) for x in preference)
        return cls(
            record["prompt"],
            record["response_a"],
            record["response_b"],
            dict(labels),
            scores,
            preference,
        )


@dataclass
class PairDataset:
    """Pairs that all carry labels for the same objectives, in a fixed objective order."""

    objectives: tuple[str, ...]
    pairs: list[PreferencePair] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.objectives = tuple(self.objectives)
        if not self.objectives:
            raise MoaError("a dataset needs at least one objective")
        for i, pair in enumerate(self.pairs):
            missing = [name for name in self.objectives if name not in pair.labels]
            if missing:
                raise MoaError(
                    f"pair {i} has no label for objective(s) {missing}; "
                    f"it has {sorted(pair.labels)}"
                )

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[PreferencePair]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.pairs[index]

    def select_objectives(self, objectives: Sequence[str]) -> "PairDataset":
        unknown = [name for name in objectives if name not in self.objectives]
        if unknown:
            raise MoaError(
                f"objectives {unknown} are not in this dataset; it has {list(self.objectives)}"
            )
        return PairDataset(tuple(objectives), self.pairs)

    def preferences(self) -> list[tuple[float, ...]]:
        """Each pair's own λ (train.preference_per_pair); every pair must have one."""
        for number, pair in enumerate(self.pairs, start=1):
            if pair.preference is None:
                raise MoaError(f"pair {number} has no preference (λ) of its own")
        return [pair.preference for pair in self.pairs]

    def conflicting_fraction(self) -> float:
        if not self.pairs:
            return 0.0
        return sum(pair.is_conflicting(self.objectives) for pair in self.pairs) / len(self.pairs)

    def split(
        self, validation_fraction: float, test_fraction: float, seed: int = 0
    ) -> dict[str, "PairDataset"]:
        """Split name → its pairs, by prompt (all pairs of a prompt land in one split; see
        prompt_split), stable across processes."""
        parts: dict[str, list[PreferencePair]] = {name: [] for name in SPLITS}
        for pair in self.pairs:
            parts[prompt_split(pair.prompt, validation_fraction, test_fraction, seed)].append(pair)
        return {name: PairDataset(self.objectives, pairs) for name, pairs in parts.items()}

    def save_jsonl(self, path: str | os.PathLike) -> None:
        lines = [json.dumps({"objectives": list(self.objectives)})]
        lines += [json.dumps(pair.to_record()) for pair in self.pairs]
        atomic_write_text(path, "\n".join(lines) + "\n")

    @classmethod
    def load_jsonl(cls, path: str | os.PathLike) -> "PairDataset":
        if not Path(path).is_file():
            raise MoaError(f"pairs file {path} does not exist")
        rows = []
        for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise MoaError(f"{path}, line {number} is not JSON: {err}") from None
        header, records = (rows[0], rows[1:]) if rows else (None, [])
        if not isinstance(header, dict) or not isinstance(header.get("objectives"), list):
            raise MoaError(
                f'{path}: the first line must be a header like {{"objectives": ["helpful", '
                '"harmless"]}'
            )
        return cls.from_records(header["objectives"], records, where=str(path))

    @classmethod
    def from_records(
        cls, objectives: Sequence[str], records: Iterable[Mapping], where: str = "data"
    ) -> "PairDataset":
        pairs = [
            PreferencePair.from_record(record, f"{where}, row {i}")
            for i, record in enumerate(records)
        ]
        return cls(tuple(objectives), pairs)


def prompt_split(key: str, validation_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """The split of a prompt: a stable, seeded draw u ∈ [0, 1) per key (SHA-256, unlike Python's
    salted str hash); "validation" (model selection) when u < validation_fraction, "test" (the
    reported figures) when u < validation_fraction + test_fraction, else "train"."""
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if value < 0:
            raise MoaError(f"{name} must be ≥ 0; got {value}")
    if not validation_fraction + test_fraction < 1:
        raise MoaError(
            f"validation_fraction + test_fraction must be below 1 (some prompts must be left "
            f"to train on); got {validation_fraction} + {test_fraction}"
        )
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < validation_fraction:
        return "validation"
    return "test" if u < validation_fraction + test_fraction else "train"
