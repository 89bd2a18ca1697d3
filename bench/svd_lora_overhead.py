"""Forward+backward time per step: SVD-LoRA (rank k, m objectives) vs PEFT LoRA of rank k+m.

Both adapters wrap the same randomly initialised LlamaForCausalLM (fp32, CPU) on every attention
and MLP projection. The two variants' timed steps alternate, so slow drift (thermal, other load)
hits both alike. Target: SVD-LoRA / LoRA ≤ 1.15 (ratio of the medians; "paired" is the median of
the per-step ratios, the steadier number on a shared machine).

    python bench/svd_lora_overhead.py --sizes tiny,100m --steps 20 --batch 4 --seq 128
"""

import argparse
import copy
import os
import statistics
import time
import warnings

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from orchestrator.model.svd_lora import inject_svd_lora, set_preference
from orchestrator.model.tiny import BUILTIN_BASES

RANK = 8
NUM_OBJECTIVES = 2
TARGET_RATIO = 1.15
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SIZES = {
    "tiny": BUILTIN_BASES["builtin:tiny"].llama_config(),  # the built-in tiny model's shape
    "100m": LlamaConfig(
        vocab_size=16000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=1024,
    ),
}


def build_models(size: str, seed: int) -> tuple[nn.Module, nn.Module, int]:
    """(SVD-LoRA model, PEFT LoRA model, base parameter count), both on identical base weights."""
    torch.manual_seed(seed)
    base = LlamaForCausalLM(SIZES[size]).float().train()
    num_params = sum(p.numel() for p in base.parameters())
    svd = inject_svd_lora(
        copy.deepcopy(base), NUM_OBJECTIVES, RANK, alpha=RANK, target_modules=TARGET_MODULES
    )
    width = RANK + NUM_OBJECTIVES
    lora_config = LoraConfig(
        r=width, lora_alpha=width, target_modules=TARGET_MODULES, lora_dropout=0.0
    )
    lora = get_peft_model(base, lora_config)
    return svd, lora, num_params


def train_step(model: nn.Module, input_ids: torch.Tensor) -> float:
    """One forward+backward (causal-LM cross-entropy); returns its wall time in ms."""
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    return (time.perf_counter() - start) * 1e3


def bench_size(size: str, args: argparse.Namespace) -> dict:
    svd, lora, num_params = build_models(size, args.seed)
    vocab = SIZES[size].vocab_size
    generator = torch.Generator().manual_seed(args.seed)
    times: dict[str, list[float]] = {"svd": [], "lora": []}
    for step in range(args.warmup + args.steps):
        input_ids = torch.randint(vocab, (args.batch, args.seq), generator=generator)
        weight = torch.rand((), generator=generator).item()
        set_preference(svd, [weight, 1.0 - weight])  # a new λ per batch, as in training
        # Alternate which variant goes first so neither always runs on a warmer cache.
        order = ["svd", "lora"] if step % 2 == 0 else ["lora", "svd"]
        for name in order:
            elapsed = train_step(svd if name == "svd" else lora, input_ids)
            if step >= args.warmup:
                times[name].append(elapsed)
    svd_ms = statistics.median(times["svd"])
    lora_ms = statistics.median(times["lora"])
    # Each step's two runs are back to back, so their ratio is robust to load from other processes.
    paired = statistics.median(s / lo for s, lo in zip(times["svd"], times["lora"], strict=True))
    return {
        "size": size,
        "params": num_params,
        "svd_trainable": sum(p.numel() for p in svd.parameters() if p.requires_grad),
        "lora_trainable": sum(p.numel() for p in lora.parameters() if p.requires_grad),
        "svd_ms": svd_ms,
        "lora_ms": lora_ms,
        "ratio": svd_ms / lora_ms,
        "paired_ratio": paired,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny", help=f"comma-separated, of {list(SIZES)}")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch intra-op threads (default: all cores; fewer is steadier on a busy machine)",
    )
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        parser.error(f"--sizes: unknown {unknown}; choose from {list(SIZES)}")
    if min(args.steps, args.batch, args.threads) < 1 or args.warmup < 0 or args.seq < 2:
        parser.error("need --steps, --batch, --threads ≥ 1, --warmup ≥ 0 and --seq ≥ 2")

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers deprecations via peft
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU; "
        f"k={RANK}, m={NUM_OBJECTIVES}, LoRA r={RANK + NUM_OBJECTIVES}; batch={args.batch}, "
        f"seq={args.seq}; median of {args.steps} steps after {args.warmup} warm-up"
    )
    header = (
        f"{'size':<6} {'params':>8} {'trainable svd/lora':>19} {'SVD-LoRA ms':>12} "
        f"{'LoRA ms':>9} {'ratio':>6} {'paired':>6}  target ≤ {TARGET_RATIO}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        r = bench_size(size, args)
        verdict = "pass" if r["ratio"] <= TARGET_RATIO else "FAIL"
        trainable = f"{r['svd_trainable'] / 1e6:.2f}M/{r['lora_trainable'] / 1e6:.2f}M"
        print(
            f"{r['size']:<6} {r['params'] / 1e6:>7.1f}M {trainable:>19} {r['svd_ms']:>12.1f} "
            f"{r['lora_ms']:>9.1f} {r['ratio']:>6.3f} {r['paired_ratio']:>6.3f}  {verdict}",
            flush=True,
        )


if __name__ == "__main__":
    main()
