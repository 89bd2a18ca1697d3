"""The search space of a sweep (`tune.space`): which config fields vary and how, checked against
the run config before any trial starts, and each trial's config built from the values drawn.

A dimension names a dotted config field and one way to vary it:
  train.aggregation: {grid: [ls, tche, stch]}     every value, in every combination (Tune's grid)
  adapter.rank: {choice: [4, 8, 16]}              one value drawn per trial
  train.learning_rate: {loguniform: [1.0e-3, 1.0e-2]}
  train.vertex_probability: {uniform: [0.0, 0.4]}
An integer field (adapter.rank, train.max_steps) draws integers from uniform and loguniform, both
bounds included.
"""

from typing import Any

from orchestrator.config.loading import field_value, with_fields
from orchestrator.config.run import RunConfig
from orchestrator.config.sections import SearchDimension
from orchestrator.errors import MoaError

# The sections a sweep may vary; eval is how trials are compared, so it stays fixed.
SWEEPABLE = ("model", "adapter", "data", "train", "scaling")


def check_space(cfg: RunConfig) -> None:
    """Fail, naming the field, unless every dimension names a field a sweep may vary and every
    value it can take gives a valid config."""
    space = cfg.tune.space
    if not space:
        raise MoaError(
            "tune.space is empty: name at least one field to sweep, e.g. "
            "train.beta: {loguniform: [0.05, 0.5]}"
        )
    for key, dimension in space.items():
        section = key.split(".", 1)[0]
        if section not in SWEEPABLE or "." not in key:
            raise MoaError(
                f"tune.space.{key}: a sweep varies fields of {', '.join(SWEEPABLE)}, named "
                "section.field (e.g. train.beta)"
            )
        current = _get(cfg, key)  # names the field when it does not exist
        numeric = not isinstance(current, bool) and isinstance(current, int | float)
        if (dimension.uniform or dimension.loguniform) and not numeric:
            raise MoaError(
                f"tune.space.{key}: uniform and loguniform need a numeric field; "
                f"{key} is {current!r}; use grid or choice"
            )
        try:
            values = _candidates(dimension, current)
        except MoaError as err:
            raise MoaError(f"tune.space.{key}: {err}") from None
        for value in values:
            try:
                with_fields(cfg, {key: value})
            except MoaError as err:
                raise MoaError(f"tune.space.{key}: the value {value!r} is refused: {err}") from None


def samplers(cfg: RunConfig) -> dict[str, tuple[str, tuple]]:
    """Each dimension as the Ray Tune sampler that draws it: {field: (name in ray.tune, args)}.
    An integer field draws integers, both bounds included."""
    space = {}
    for key, dimension in cfg.tune.space.items():
        integer = _is_integer(_get(cfg, key))
        if dimension.grid is not None:
            space[key] = ("grid_search", (dimension.grid,))
        elif dimension.choice is not None:
            space[key] = ("choice", (dimension.choice,))
        elif dimension.uniform is not None:
            low, high = dimension.uniform
            space[key] = (
                ("randint", (int(low), int(high) + 1)) if integer else ("uniform", (low, high))
            )
        else:
            low, high = dimension.loguniform
            space[key] = (
                ("lograndint", (int(low), int(high) + 1))
                if integer
                else ("loguniform", (low, high))
            )
    return space


def trial_config(cfg: RunConfig, params: dict[str, Any], output_dir: str) -> RunConfig:
    """The sweep's config with a trial's values, trained into `output_dir`."""
    return with_fields(cfg, {**params, "output_dir": output_dir})


def count_trials(cfg: RunConfig) -> int:
    """Trials the sweep runs: tune.num_samples for each combination of the grid dimensions."""
    total = cfg.tune.num_samples
    for dimension in cfg.tune.space.values():
        if dimension.grid is not None:
            total *= len(dimension.grid)
    return total


def largest(cfg: RunConfig, key: str) -> Any:
    """The largest value the dotted field `key` takes in the sweep (its value when not swept)."""
    current = _get(cfg, key)
    dimension = cfg.tune.space.get(key)
    return current if dimension is None else max(_candidates(dimension, current))


def _candidates(dimension: SearchDimension, current: Any) -> list[Any]:
    if dimension.grid is not None or dimension.choice is not None:
        return list(dimension.grid if dimension.grid is not None else dimension.choice)
    low, high = dimension.uniform or dimension.loguniform
    if _is_integer(current):
        if low != int(low) or high != int(high):
            raise MoaError(f"an integer field needs integer bounds; got [{low}, {high}]")
        return [int(low), int(high)]
    return [low, high]


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(cfg: RunConfig, key: str) -> Any:
    try:
        return field_value(cfg, key)
    except MoaError as err:
        raise MoaError(f"tune.space.{key}: {err}") from None
