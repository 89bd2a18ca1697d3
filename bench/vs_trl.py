"""The Panacea-DPO training step against TRL's DPOTrainer + PEFT LoRA, on the same data.

Both sides train the same base model (tiny: builtin:tiny; 100m: bench/train_scaling.py's ~100M
Llama) on the same pairs, the same `--batch` pairs per step in the same order, tokenised once by
this project (TRL gets those token ids and a sequential sampler), fp32, `--threads` torch threads,
the reference log-probs precomputed before the first step, no evaluation and no saving. Rows:

  moa packed    MultiObjectiveTrainer, Panacea (m = 2, SVD-LoRA rank k), train.packing on
  moa padded    the same with train.packing off (one padded row per response, as before)
  trl           DPOTrainer, LoRA of rank k + m on the same projections, precompute_ref_log_probs,
                fp32, no gradient checkpointing: our settings
  trl defaults  DPOTrainer's own settings (bf16 autocast, gradient checkpointing, the reference
                computed at every step), same LoRA
  moa checkpointed, trl checkpointed   moa packed and trl with gradient checkpointing on

Each run is its own process (peak RSS is its own), runs interleaved across the rows,
`--repeats` times. tokens/s counts the pairs' tokens (prompt + chosen + rejected) over the
timed steps (all but the first); medians, the range in brackets; the ratio is to `trl`.

`--shape task` takes the built-in task's pairs as they are (prompts ~20 tokens, responses ~35);
`--shape long` makes pairs of 256 prompt and 128 response tokens from the task's text, where
sharing the prompt matters most.

    pip install -e '.[bench]'
    python bench/vs_trl.py --models tiny,100m --shape task
    python bench/vs_trl.py --models tiny,100m --shape long
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROWS = ("moa packed", "moa padded", "trl", "trl defaults", "moa checkpointed", "trl checkpointed")
RANK, OBJECTIVES = 8, ("helpful", "harmless")
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def encoded_pairs(model_dir: str, count: int, shape: str) -> list:
    from orchestrator.data.assistant_task import AssistantTask
    from orchestrator.data.encoding import EncodedPair, encode_pairs
    from orchestrator.model.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    pairs = AssistantTask(seed=0).preference_pairs(max(count, 64), OBJECTIVES)
    encoded = encode_pairs(tokenizer, pairs, max_prompt_tokens=256, max_response_tokens=128)
    if shape == "task":
        return encoded[:count]
    stream = [t for pair in encoded for t in pair.prompt + pair.response_a + pair.response_b]
    eos = tokenizer.eos_token_id
    stream = [t for t in stream if t != eos]
    out = []
    for i in range(count):
        at = (i * 97) % (len(stream) - 520)
        prompt, a, b = (
            stream[at : at + 256],
            stream[at + 256 : at + 383],
            stream[at + 383 : at + 510],
        )
        out.append(EncodedPair(prompt, [*a, eos], [*b, eos], encoded[i % len(encoded)].signs))
    return out


def run_moa(
    model_dir: str, pairs: list, batch: int, packing: bool, checkpointing: bool
) -> list[float]:
    from orchestrator.config.sections import TrainSection
    from orchestrator.model.loading import load_model, load_tokenizer
    from orchestrator.model.svd_lora import inject_svd_lora
    from orchestrator.training.trainer import MultiObjectiveTrainer

    tokenizer = load_tokenizer(model_dir)
    model = inject_svd_lora(load_model(model_dir), len(OBJECTIVES), RANK, 64.0)
    steps = len(pairs) // batch
    cfg = TrainSection(
        batch_size=batch,
        max_steps=steps,
        warmup_steps=0,
        nll_weight=0.0,
        learning_rate=1e-4,
        packing=packing,
        gradient_checkpointing=checkpointing,
    )
    trainer = MultiObjectiveTrainer(model, pairs, tokenizer.pad_token_id, cfg)
    trainer.prepare()
    return [trainer.train_step().seconds for _ in range(steps)]


def run_trl(
    model_dir: str, pairs: list, batch: int, matched: bool, checkpointing: bool
) -> list[float]:
    import datasets
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from orchestrator.data.batching import epoch_permutation
    from orchestrator.model.loading import load_model, load_tokenizer

    class SameData(DPOTrainer):
        """Our token ids, in the order our trainer takes them (its epoch permutation)."""

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.start)

    order = epoch_permutation(len(pairs), 0, 0).tolist()  # TrainSection's seed 0, epoch 0
    rows = [pairs[i] for i in order]
    dataset = datasets.Dataset.from_dict(
        {
            "prompt_ids": [p.prompt for p in rows],
            "chosen_ids": [p.response_a for p in rows],
            "rejected_ids": [p.response_b for p in rows],
        }
    )
    tokenizer = load_tokenizer(model_dir)
    clock = StepClock()
    # Matched to ours: fp32 and no gradient checkpointing (TRL's defaults turn on both bf16 and
    # checkpointing), the reference precomputed.
    ours = {
        "precompute_ref_log_probs": True,
        "gradient_checkpointing": checkpointing,
        "bf16": False,
    }
    settings = ours if matched else {}
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=len(pairs) // batch,
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            dataloader_num_workers=0,
            max_length=None,
            **settings,
        )
        lora = LoraConfig(
            r=RANK + len(OBJECTIVES), lora_alpha=64, lora_dropout=0.0, target_modules=PROJECTIONS
        )
        trainer = SameData(
            model=load_model(model_dir),
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[clock],
        )
        trainer.train()
    return clock.seconds


def child(args) -> None:
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    pairs = encoded_pairs(args.model_dir, args.batch * args.steps, args.shape)
    checkpointing = args.child.endswith("checkpointed")
    if args.child.startswith("moa"):
        packing = args.child != "moa padded"
        seconds = run_moa(args.model_dir, pairs, args.batch, packing, checkpointing)
    else:
        matched = args.child != "trl defaults"
        seconds = run_trl(args.model_dir, pairs, args.batch, matched, checkpointing)
    tokens = [
        sum(
            len(p.prompt) + len(p.response_a) + len(p.response_b) for p in pairs[i : i + args.batch]
        )
        for i in range(0, len(pairs), args.batch)
    ]
    timed = slice(1, None)  # the first step warms up
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = sum(tokens[timed]) / sum(seconds[timed])
    print(json.dumps({"tokens_per_s": rate, "peak_mb": peak_mb, "steps": len(seconds)}))


def model_dirs(names: list[str]) -> dict[str, str]:
    from orchestrator.model.loading import resolve_model_path

    tiny = resolve_model_path("builtin:tiny")
    dirs = {}
    for name in names:
        if name == "tiny":
            dirs[name] = tiny
        else:
            sys.path.insert(0, str(Path(__file__).parent))
            from train_scaling import build_100m

            dirs[name] = str(build_100m(Path(tiny)))
    return dirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,100m")
    parser.add_argument("--shape", choices=("task", "long"), default="task")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = args.rows.split(",")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads)}
    print(
        f"{args.shape} pairs, {args.batch} per step, {args.steps} steps (the first untimed), "
        f"fp32 CPU, {args.threads} threads, {args.repeats} interleaved runs per row"
    )
    header = f"{'model':>6} {'row':>16} {'tokens/s':>22} {'vs trl':>7} {'peak RSS MB':>18}"
    print(header)
    print("-" * len(header))
    for name, directory in model_dirs(args.models.split(",")).items():
        results: dict[str, list[dict]] = {row: [] for row in rows}
        for _ in range(args.repeats):
            for row in rows:
                command = [sys.executable, __file__, "--child", row, "--model-dir", directory]
                for flag in ("shape", "batch", "steps", "threads"):
                    command += [f"--{flag}", str(getattr(args, flag))]
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                results[row].append(json.loads(done.stdout.strip().splitlines()[-1]))
        reference = (
            statistics.median(r["tokens_per_s"] for r in results.get("trl", []))
            if "trl" in results
            else None
        )
        for row in rows:
            rates = [r["tokens_per_s"] for r in results[row]]
            peaks = [r["peak_mb"] for r in results[row]]
            rate = statistics.median(rates)
            ratio = f"{rate / reference:.2f}x" if reference else "-"
            print(
                f"{name:>6} {row:>16} {rate:>8.0f} [{min(rates):.0f}–{max(rates):.0f}] {ratio:>7} "
                f"{statistics.median(peaks):>6.0f} [{min(peaks):.0f}–{max(peaks):.0f}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
