"""Loading a base model and its tokenizer through the Hugging Face `from_pretrained` path.

A hub id or a local directory both work; "builtin:tiny" (and "builtin:tiny-quick") is the project's
own tiny Llama model for the built-in task, built once and cached (see orchestrator.model.tiny).
"""

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from orchestrator.errors import MoaError
from orchestrator.model.tiny import BUILTIN_BASES, ensure_tiny_base

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name_or_path: str) -> str:
    """A hub id as it is; a local directory as an absolute path (Ray's workers and actors do not
    run in this process's working directory); a built-in model's cached directory."""
    if not name_or_path.startswith("builtin:"):
        return str(Path(name_or_path).resolve()) if Path(name_or_path).exists() else name_or_path
    if name_or_path not in BUILTIN_BASES:
        raise MoaError(
            f"unknown built-in model {name_or_path!r}; choose from {list(BUILTIN_BASES)}"
        )
    return str(ensure_tiny_base(BUILTIN_BASES[name_or_path]))


def load_tokenizer(name_or_path: str):
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise MoaError(f"could not load a tokenizer from {name_or_path!r}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(name_or_path: str) -> int | None:
    """The longest sequence the model was built for, when its config names it."""
    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path))
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def resolve_device(device: str) -> torch.device:
    """ "auto" is the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MoaError(f"device {device!r} asked for, but no CUDA device is available")
    return torch.device(device)


def load_model(name_or_path: str, dtype: str = "float32", device: str = "cpu"):
    if dtype not in DTYPES:
        raise MoaError(f"dtype must be one of {list(DTYPES)}; got {dtype!r}")
    path = resolve_model_path(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    except (OSError, ValueError) as err:
        raise MoaError(f"could not load a causal LM from {name_or_path!r}: {err}") from err
    return model.to(resolve_device(device))
