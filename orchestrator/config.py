"""Run configuration: pydantic models, YAML loading and dotted command-line overrides.

Every section forbids unknown keys, so a typo fails before anything runs, with the field named.
"""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import MoaError

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
Count = Annotated[int, Field(ge=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    name_or_path: str = "builtin:tiny"  # a hub id, a local directory, or the built-in tiny model
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")] = "auto"  # auto: GPU if any


class AdapterSection(Section):
    rank: Count = 8
    alpha: Positive = 64.0  # the adapter's scale is alpha / rank
    target_modules: list[str] | None = None  # default: every linear layer but the LM head
    init_std: Positive = 0.02


class DataSection(Section):
    source: Literal["assistant", "pku_saferlhf", "jsonl"] = "assistant"
    path: str | None = None  # hub id or file for pku_saferlhf; the file for jsonl
    objectives: list[str] = ["helpful", "harmless"]
    num_pairs: Count = 2000  # built-in task only
    conflict_fraction: Probability = 0.5  # built-in task only
    test_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2  # held-out prompts of a file
    seed: int = 0
    max_prompt_tokens: Count = 64
    max_response_tokens: Count = 96

    @model_validator(mode="after")
    def _check(self) -> "DataSection":
        if len(set(self.objectives)) != len(self.objectives) or len(self.objectives) < 2:
            raise ValueError(
                f"objectives must be at least two distinct names; got {self.objectives}"
            )
        if self.source == "jsonl" and not self.path:
            raise ValueError("source 'jsonl' needs data.path")
        return self


class TrainSection(Section):
    loss: Literal["dpo", "sft"] = "dpo"
    aggregation: Literal["ls", "tche", "stch"] = "ls"
    stch_mu: Positive = 0.1
    beta: Positive = 0.1
    # Length-normalised NLL of each objective's chosen response (0: plain DPO). It keeps the
    # policies at the extreme preferences fluent, where plain DPO lets the chosen likelihood fall.
    nll_weight: Annotated[float, Field(ge=0.0)] = 0.2
    learning_rate: Positive = 2e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    batch_size: Count = 16  # pairs per micro-batch
    grad_accum_steps: Count = 1
    max_steps: Count = 300
    warmup_steps: Annotated[int, Field(ge=0)] = 20
    max_grad_norm: Positive | None = 1.0
    vertex_probability: Probability = 0.2  # chance that a step trains a single objective
    precompute_reference: bool = True  # reference log-probs once per dataset, not per step
    seed: int = 0
    log_every: Count = 10


class EvalSection(Section):
    enabled: bool = True
    grid_divisions: Count = 10  # λ grid: multiples of 1/divisions on the simplex
    num_prompts: Count = 60  # held-out prompts per λ
    temperature: Annotated[float, Field(ge=0.0)] = 0.0  # 0: greedy
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    answers_per_prompt: Count = 1  # more than 1 only makes sense when sampling
    seed: int = 0
    max_new_tokens: Count = 96
    batch_size: Count = 128
    reference_point: list[float] | None = None  # default: the task's own


class RunConfig(Section):
    model: ModelSection = ModelSection()
    adapter: AdapterSection = AdapterSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    output_dir: str = "runs/panacea"

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.eval.enabled and self.data.source != "assistant":
            raise ValueError(
                "eval.enabled needs ground-truth scorers, which only the built-in task "
                "(data.source: assistant) has; set eval.enabled: false"
            )
        ref = self.eval.reference_point
        if ref is not None and len(ref) != len(self.data.objectives):
            raise ValueError(
                f"eval.reference_point has {len(ref)} values "
                f"for {len(self.data.objectives)} objectives"
            )
        return self


def build_config(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise MoaError(_describe(err)) from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from a YAML file (or the defaults) with `key.sub=value` overrides applied."""
    data: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise MoaError(f"config file {path} does not exist")
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise MoaError(f"config file {path} must hold a mapping of sections")
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise MoaError(f"override {override!r} must look like section.field=value")
        *parents, leaf = key.split(".")
        node = data
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise MoaError(f"override {override!r}: {name} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return build_config(data)


def _describe(err: ValidationError) -> str:
    problems = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or "config"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown field '{field}'")
        elif error["type"] == "value_error":
            problems.append(f"{field}: {error['msg'].removeprefix('Value error, ')}")
        else:
            problems.append(f"field '{field}': {error['msg']} (got {error.get('input')!r})")
    return "invalid config: " + "; ".join(problems)
