"""Panacea on Ray Train: data parallelism, restarts, resumes and DeepSpeed give the numbers of a
single uninterrupted process."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.sources import load_training_pairs
from orchestrator.distributed.train import FAULT_ENV
from orchestrator.errors import MoaError
from orchestrator.recipes.panacea import run_panacea
from orchestrator.training.loop import train_rank
from orchestrator.training.metrics_log import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """32 training pairs: with a global batch of 8, an epoch is exactly 4 steps."""
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    AssistantTask(seed=3).preference_pairs(32, ("helpful", "harmless")).save_jsonl(path)
    return path


def config(tiny_base_dir, pairs_file, output_dir, *overrides):
    return load_config(
        None,
        [
            f"model.name_or_path={tiny_base_dir}",
            "data.source=jsonl",
            f"data.path={pairs_file}",
            "data.test_fraction=0",
            "adapter.rank=2",
            "train.batch_size=4",
            "train.max_steps=6",
            "train.warmup_steps=1",
            "train.log_every=1",
            "eval.enabled=false",
            "checkpoint.every=2",
            f"output_dir={output_dir}",
            *overrides,
        ],
    )


def adapter(run_dir):
    return load_file(run_dir / "adapter" / "adapter.safetensors")


def in_process(cfg):
    """The same run in this process on one rank, without Ray (training/loop.py as it is): the
    single-process result the Ray Train runs must give. Its run folder and logged steps."""
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True)
    # An empty reference cache: its reference log-probs are its own, not the workers' gathered.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOA_CACHE_DIR", str(run_dir.parent / f"{run_dir.name}-cache"))
        train_rank(cfg, run_dir, load_training_pairs(cfg.data))
    return run_dir, read_metrics(run_dir)


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


@pytest.fixture(scope="module")
def two_workers(tiny_base_dir, pairs_file, tmp_path_factory):
    """The reference run: 2 gloo workers, 4 pairs each per step, never interrupted, with
    gradient checkpointing (the single-process runs it is compared with keep activations)."""
    out = tmp_path_factory.mktemp("two-workers") / "run"
    return run_panacea(
        config(
            tiny_base_dir, pairs_file, out, "scaling.num_workers=2",
            "train.gradient_checkpointing=true",
        ),
        progress=False,
    )  # fmt: skip


def test_two_workers_train_the_adapter_one_worker_trains_on_the_same_global_batch(
    two_workers, tiny_base_dir, pairs_file, tmp_path
):
    one_dir, one_history = in_process(
        config(tiny_base_dir, pairs_file, tmp_path / "run", "train.grad_accum_steps=2")
    )
    assert max_difference(adapter(two_workers.run_dir), adapter(one_dir)) < 1e-5
    assert [m["step"] for m in two_workers.history] == [1, 2, 3, 4, 5, 6]
    # What each worker printed is in the run folder, not on the driver's console.
    logs = two_workers.run_dir / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["rank_0.log", "rank_1.log"]
    assert "step 6 | loss" in (logs / "rank_0.log").read_text()
    for a, b in zip(two_workers.history, one_history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["tokens"] == b["tokens"]  # tokens are summed over the ranks


def test_a_failed_worker_restarts_and_a_failed_job_resumes_with_the_single_process_result(
    tiny_base_dir, pairs_file, tmp_path, monkeypatch
):
    """Tchebycheff on 2 workers (not linear: the ranks must agree on the step's per-objective
    means first). Rank 1 fails before step 4: Ray Train restarts the worker group from the
    checkpoint at step 2 (checkpoint.max_failures=1). Rank 1 fails again before step 5, past
    max_failures: the job stops with the checkpoint at step 4, the end of epoch 0, and `moa train
    --resume` finishes it. The adapter and every step's loss are those of one uninterrupted
    process."""
    common = ("train.aggregation=tche",)
    one_dir, one_history = in_process(
        config(tiny_base_dir, pairs_file, tmp_path / "one", "train.grad_accum_steps=2", *common)
    )
    run_dir = tmp_path / "run"
    cfg = config(
        tiny_base_dir, pairs_file, run_dir, "scaling.num_workers=2", "checkpoint.max_failures=1",
        *common,
    )  # fmt: skip
    monkeypatch.setenv(FAULT_ENV, "4:1,5:1")
    with pytest.raises(MoaError, match="--resume"):
        run_panacea(cfg, progress=False)
    assert (run_dir / ".fault-injected-4").exists() and (run_dir / ".fault-injected-5").exists()
    log = (run_dir / "logs" / "rank_1.log").read_text()
    assert "injected fault on rank 1 before step 4" in log
    assert "injected fault on rank 1 before step 5" in log
    state = json.loads((run_dir / "checkpoints/checkpoint_000004/state.json").read_text())
    assert (state["step"], state["epoch"], state["position"]) == (4, 1, 0)
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3, 4]  # step 3 logged once

    monkeypatch.delenv(FAULT_ENV)
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert max_difference(adapter(run_dir), adapter(one_dir)) < 1e-5
    history = read_metrics(run_dir)
    assert [m["step"] for m in history] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(history, one_history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_only_the_last_checkpoints_are_kept(two_workers):
    kept = sorted(p.name for p in (two_workers.run_dir / "checkpoints").glob("checkpoint_0*"))
    assert kept == ["checkpoint_000004", "checkpoint_000006"]  # checkpoint.keep = 2


def test_deepspeed_zero2_trains_and_its_first_step_matches_ddp(
    two_workers, tiny_base_dir, pairs_file, tmp_path
):
    cfg = config(
        tiny_base_dir, pairs_file, tmp_path / "run", "scaling.num_workers=2",
        "scaling.strategy=deepspeed", "train.max_steps=2", "train.gradient_checkpointing=true",
    )  # fmt: skip
    result = run_panacea(cfg, progress=False)
    assert [m["step"] for m in result.history] == [1, 2]
    assert result.history[0]["loss"] == pytest.approx(two_workers.history[0]["loss"], rel=1e-6)
    assert result.history[0]["objective_losses"] == pytest.approx(
        two_workers.history[0]["objective_losses"], rel=1e-6
    )
    checkpoint = result.run_dir / "checkpoints" / "checkpoint_000002"
    assert (checkpoint / "deepspeed" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file()
    assert (checkpoint / "adapter" / "adapter.safetensors").is_file()
