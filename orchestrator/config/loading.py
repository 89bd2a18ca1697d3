"""Making a RunConfig: from YAML and `section.field=value` overrides, and from another config.

`with_fields` is the one way a config is derived: command-line overrides, a sweep trial's values,
a model of a multi-model method, a SIPO re-alignment, a comparison's seed all set dotted fields
on a config and validate the result as a whole, so a derived config that cannot be is refused
with its field named, like a mistyped YAML file.
"""

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.config.run import RunConfig
from orchestrator.errors import MoaError


def _validated(data: Mapping[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise MoaError(_describe(err)) from None


def with_fields(base: RunConfig | Mapping[str, Any], fields: Mapping[str, Any]) -> RunConfig:
    """`base` (a config, or the mapping of sections a YAML file holds) with each dotted field of
    `fields` set, e.g. {"train.beta": 0.2, "output_dir": "runs/x"}, validated as a whole."""
    data = base.model_dump() if isinstance(base, RunConfig) else copy.deepcopy(dict(base))
    for key, value in fields.items():
        *parents, leaf = key.split(".")
        node = data
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise MoaError(f"{key}: {name} is not a section")
        node[leaf] = value
    return _validated(data)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`section.field=value` strings as {dotted field: value}, each value read as YAML."""
    fields = {}
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise MoaError(f"override {override!r} must look like section.field=value")
        fields[key] = yaml.safe_load(raw)
    return fields


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from a YAML file (or the defaults) with `key.sub=value` overrides applied."""
    data: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise MoaError(f"config file {path} does not exist")
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise MoaError(f"config file {path} must hold a mapping of sections")
    return with_fields(data, parse_overrides(overrides))


def field_value(cfg: RunConfig, key: str) -> Any:
    """The value of the dotted field `key`; a field that does not exist is named with its
    section's fields."""
    node: Any = cfg.model_dump()
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "no fields"
            parent = ".".join(key.split(".")[:i]) or "the config"
            raise MoaError(f"{parent} has no field {part!r} (it has: {known})")
        node = node[part]
    return node


def _describe(err: ValidationError) -> str:
    problems = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or "config"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown field '{field}'")
        elif error["type"] == "value_error":
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{field}: {message}" if error["loc"] else message)
        else:
            problems.append(f"field '{field}': {error['msg']} (got {error.get('input')!r})")
    return "invalid config: " + "; ".join(problems)
