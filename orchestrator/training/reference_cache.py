"""π_ref's log-probs of a dataset's pairs, kept on disk and reused by every run that needs them.

Every DPO-family run on the same pairs and base model anchors on the same π_ref (the adapter
switched off), so its log-probs are computed once: `moa compare` trains a dozen models per seed,
SPO and MODPO need π_ref for their margins, a sweep's trials all need it. A key names everything
the numbers depend on — the base model's weights (hashed), the pairs' token ids, how they are
batched, the device kind and the library versions — so a hit is bit for bit what computing them
again would give. Files live in MOA_CACHE_DIR/reference/ (default ~/.cache/moa); delete the folder
to drop them.
"""

import hashlib
from pathlib import Path

import torch
import transformers
from torch import nn

from orchestrator.atomic import atomic_torch_save
from orchestrator.data.encoding import EncodedPair
from orchestrator.model.svd_lora import adapter_parameters, unwrap
from orchestrator.model.tiny import cache_dir

FOLDER = "reference"


def reference_key(
    model: nn.Module, pairs: list[EncodedPair], batch_size: int, packing: bool, pack_tokens: int
) -> str | None:
    """What π_ref's log-probs of `pairs`, computed in batches of `batch_size` pairs in order
    (pair_batch with `packing`, `pack_tokens`), depend on, as a file name; None when the weights
    are partitioned across ranks (ZeRO-3: each rank holds a slice, so none can hash them)."""
    digest = hashlib.blake2b(digest_size=16)
    base = unwrap(model)
    adapter = {id(p) for p in adapter_parameters(base).values()}
    for name, tensor in base.state_dict(keep_vars=True).items():
        if id(tensor) in adapter:
            continue
        if hasattr(tensor, "ds_id"):
            return None
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{list(data.shape)};".encode())
        digest.update(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
    for pair in pairs:
        digest.update(repr((pair.prompt, pair.response_a, pair.response_b)).encode())
    # The config holds what the weights do not (RoPE's θ and scaling, the attention kernel).
    config = getattr(base, "config", None)
    if config is not None:
        digest.update(config.to_json_string().encode())
        digest.update(str(getattr(config, "_attn_implementation", None)).encode())
    device = next(base.parameters()).device.type
    layout = (batch_size, packing, pack_tokens, device, torch.__version__, transformers.__version__)
    digest.update(repr(layout).encode())
    return digest.hexdigest()


def _path(key: str) -> Path:
    return cache_dir() / FOLDER / f"{key}.pt"


def cached_reference(key: str | None) -> torch.Tensor | None:
    """The [pairs, 2] log-probs kept under `key`, or None (also when there is no key)."""
    if key is None or not _path(key).is_file():
        return None
    return torch.load(_path(key))


def keep_reference(key: str | None, logprobs: torch.Tensor) -> None:
    """Keep `logprobs` under `key`; without a key, nothing."""
    if key is not None:
        atomic_torch_save(_path(key), logprobs.cpu())
