"""Panacea training throughput on Ray Train with 1 and 2 CPU workers (gloo DDP), and its MFU.

Each (model, workers) pair is one `run_panacea` on the built-in task (eval off, a metrics line
every step) with the same global batch, so the workers only change how a step is cut:
batch_size × workers × grad_accum_steps pairs (e.g. 8×1×2 and 8×2×1). Each worker gets
cores / workers CPUs (Ray sets its OMP_NUM_THREADS from them). Models:

  tiny   builtin:tiny, the task's own small Llama;
  100m   a Llama of hidden 768, 14 layers, 12 heads, MLP 2048, the tiny tokenizer's vocabulary,
         randomly initialised (seed 0) and cached in MOA_CACHE_DIR next to the tiny base.

From the logged steps, the first (warm-up) left out: tokens/s = Σ tokens / Σ seconds (non-pad
tokens of every forward, all ranks), the mean seconds per step and its split into collating
(data), forward+backward and optimizer (gradient sync, clipping, update). The speed-up is the
tokens/s over that of the fewest workers of the same model. "wall" is the whole `run_panacea`
call: worker start, model loads, the one-time reference log-probs, training and the driver's
reload of the adapter; Ray itself is started once before all runs.

MFU = (4·N · tokens per step / seconds per step) / peak. Peak: the best fp32 torch.mm of two
square matrices on all cores of the machine (2n³ FLOPs per product). 4·N FLOPs per token: 2N for
the forward and 2N for the input gradients of the backward; the frozen base needs no weight
gradients, the adapter's own FLOPs are left out (a few % at rank 8), and so are the reference
log-probs, precomputed once per run. N: every parameter of the base model except the input
embedding table (a lookup, not a matmul); the LM head is counted, as a matmul of every token.
Attention's sequence-length term (QKᵀ, AV) is left out too, small at these lengths.

    python bench/train_scaling.py --models tiny,100m --workers 1,2

Each model first runs in this process ("here"), then on the workers, so the table shows what Ray
Train costs per step.
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import transformers

from orchestrator.atomic import atomic_directory
from orchestrator.config import load_config
from orchestrator.model.loading import resolve_model_path
from orchestrator.model.tiny import cache_dir

MODELS = ("tiny", "100m")
SEED = 0
LLAMA_100M = {  # LlamaConfig fields of the ~100M model; the vocabulary is the tiny tokenizer's
    "hidden_size": 768,
    "num_hidden_layers": 14,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "intermediate_size": 2048,
    "max_position_embeddings": 512,
}


def build_100m(tiny_dir: Path) -> Path:
    """The ~100M Llama's directory (weights and the tiny tokenizer), built once and cached."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    key = hashlib.sha256(json.dumps([LLAMA_100M, SEED, tiny_dir.name]).encode()).hexdigest()[:12]
    path = cache_dir() / f"bench-llama-100m-{key}"
    if (path / "config.json").is_file():
        return path
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **LLAMA_100M,
    )
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config)
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path


def parameter_counts(path: str | Path) -> tuple[int, int]:
    """(all parameters, N: all but the input embedding table), from the config alone."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    total = sum(p.numel() for p in model.parameters())
    # Without de-duplication a tied LM head is still counted once, as the matmul it is.
    every = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    return total, every - model.get_input_embeddings().weight.numel()


def matmul_peak(n: int, reps: int, warmup: int = 3) -> float:
    """The best fp32 FLOP/s of an n×n torch.mm on all cores."""
    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(warmup):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def bench_run(path: str, workers: int, steps: int, args: argparse.Namespace) -> dict:
    """One run_panacea on `workers` Ray Train workers, or (workers 0) the same run's rank loop
    in this process on all its cores; the per-step numbers are means over the steps after the
    first."""
    from orchestrator.data.sources import load_training_pairs
    from orchestrator.recipes.panacea import run_panacea
    from orchestrator.training.loop import train_rank
    from orchestrator.training.metrics_log import read_metrics

    here = workers == 0
    workers = max(workers, 1)
    accum = args.global_batch // (args.batch_size * workers)
    with tempfile.TemporaryDirectory(prefix="moa-bench-scaling-") as out:
        cfg = load_config(
            None,
            [
                f"model.name_or_path={path}",
                "data.source=assistant",
                f"data.num_pairs={args.num_pairs}",
                "eval.enabled=false",
                f"train.max_steps={steps}",
                f"train.batch_size={args.batch_size}",
                f"train.grad_accum_steps={accum}",
                "train.log_every=1",
                f"scaling.num_workers={workers}",
                f"scaling.cpus_per_worker={(os.cpu_count() or 1) / workers}",
                "logging.tensorboard=false",
                "logging.mlflow=false",
                f"output_dir={out}",
            ],
        )
        start = time.perf_counter()
        if here:
            torch.set_num_threads(os.cpu_count() or 1)
            with contextlib.redirect_stdout(io.StringIO()):  # its step lines; the table has them
                train_rank(cfg, Path(out), load_training_pairs(cfg.data))
            history = read_metrics(Path(out))
        else:
            history = run_panacea(cfg, progress=False).history
        wall = time.perf_counter() - start
    timed = sorted(history, key=lambda r: r["step"])[1:]
    if not timed:
        raise SystemExit(f"{path}: no logged steps after the warm-up step")
    seconds = sum(r["seconds"] for r in timed)
    return {
        "tokens_per_step": statistics.mean(r["tokens"] for r in timed),
        "step_s": seconds / len(timed),
        "tokens_per_s": sum(r["tokens"] for r in timed) / seconds,
        "data_s": statistics.mean(r["data_seconds"] for r in timed),
        "compute_s": statistics.mean(r["compute_seconds"] for r in timed),
        "optimizer_s": statistics.mean(r["optimizer_seconds"] for r in timed),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,100m", help=f"comma-separated, of {MODELS}")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--steps-tiny", type=int, default=12, help="steps per tiny run")
    parser.add_argument("--steps-100m", type=int, default=4, help="steps per ~100M run")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per micro-batch")
    parser.add_argument("--global-batch", type=int, default=16, help="pairs per step")
    parser.add_argument("--num-pairs", type=int, default=128, help="training pairs")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the peak's torch.mm")
    parser.add_argument("--matmul-reps", type=int, default=10)
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        parser.error(f"--models: choose from {list(MODELS)}")
    try:
        workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    except ValueError:
        parser.error("--workers: comma-separated integers")
    if not workers or workers[0] < 1 or min(args.steps_tiny, args.steps_100m) < 2:
        parser.error("need worker counts ≥ 1 and ≥ 2 steps per run (the first is warm-up)")
    for w in workers:
        if args.global_batch % (args.batch_size * w):
            parser.error(f"--global-batch must be a multiple of --batch-size × {w} workers")
    if args.num_pairs < args.global_batch:
        parser.error("--num-pairs must hold at least one global batch")

    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.utils.logging.disable_progress_bar()  # the driver's reload of each run
    # Set before Ray starts, so its workers resolve builtin:tiny in the same cache.
    os.environ.setdefault("MOA_CACHE_DIR", str(cache_dir()))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cores = os.cpu_count() or 1
    peak = matmul_peak(args.matmul_size, args.matmul_reps)

    tiny_dir = Path(resolve_model_path("builtin:tiny"))
    paths = {"tiny": "builtin:tiny"}
    if "100m" in models:
        paths["100m"] = str(build_100m(tiny_dir))
    counts = {m: parameter_counts(tiny_dir if m == "tiny" else paths[m]) for m in models}
    for m in models:
        print(f"{m}: {counts[m][0]:,} parameters, N = {counts[m][1]:,} ({paths[m]})")

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cores * 2, include_dashboard=False, log_to_driver=False)
    print(
        f"torch {torch.__version__}, ray {ray.__version__}, {cores} cores, fp32 CPU, gloo DDP; "
        f"Ray started in {time.perf_counter() - start:.1f} s; {args.num_pairs} pairs, "
        f"global batch {args.global_batch} pairs; first step of each run not timed",
        flush=True,
    )
    header = (
        f"{'model':<5} {'params':>7} {'workers':>7} {'batch':>10} {'tok/step':>8} "
        f"{'s/step':>7} {'tok/s':>7} {'speed-up':>8} {'data s':>7} {'fwd+bwd s':>9} "
        f"{'opt s':>6} {'MFU %':>6} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    try:
        for m in models:
            steps = args.steps_tiny if m == "tiny" else args.steps_100m
            base = None
            for w in [0, *workers]:
                r = bench_run(paths[m], w, steps, args)
                if w:
                    base = base or r["tokens_per_s"]
                else:
                    in_process = r["tokens_per_s"]
                accum = args.global_batch // (args.batch_size * max(w, 1))
                batch = f"{args.global_batch}={args.batch_size}×{max(w, 1)}×{accum}"
                mfu = 4 * counts[m][1] * r["tokens_per_step"] / r["step_s"] / peak
                label = w or "here"
                print(
                    f"{m:<5} {counts[m][0] / 1e6:>6.1f}M {label:>7} "
                    f"{batch:>10} {r['tokens_per_step']:>8.0f} "
                    f"{r['step_s']:>7.3f} {r['tokens_per_s']:>7.0f} "
                    f"{r['tokens_per_s'] / (base or r['tokens_per_s']):>7.2f}x {r['data_s']:>7.3f} "
                    f"{r['compute_s']:>9.3f} {r['optimizer_s']:>6.3f} {100 * mfu:>6.2f} "
                    f"{r['wall_s']:>7.1f}",
                    flush=True,
                )
                if w == 1:
                    ratio = r["tokens_per_s"] / in_process
                    print(f"      1 Ray Train worker / in process: {ratio:.3f}× tokens/s")
    finally:
        ray.shutdown()
    print(
        f'\nbatch: global = micro-batch × workers × grad_accum_steps pairs; workers "here": the '
        f"same rank loop in this process, on all {cores} cores; speed-up: tok/s over "
        f"{workers[0]} worker(s).\npeak: {peak / 1e9:.1f} GFLOP/s (best fp32 torch.mm, "
        f"n={args.matmul_size}, {cores} threads). MFU = 4·N·(tok/step) / (s/step) / peak, "
        "N = base parameters but the input embedding (frozen base: forward 2N, input grads 2N)."
    )


if __name__ == "__main__":
    main()
