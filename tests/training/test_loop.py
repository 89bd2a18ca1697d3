"""One rank's whole run in this process (training/loop.py without Ray): evaluation during
training logs the coarse front's hypervolume and keeps the best adapter. On Ray the same loop
runs in each Ray Train worker (tests/distributed/test_train.py, tests/recipes/test_sweep.py)."""

import json
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.sources import load_training_pairs
from orchestrator.evaluation.run_front import evaluate_on_grid
from orchestrator.model.adapter_io import read_adapter_config
from orchestrator.training import selection
from orchestrator.training.loop import train_rank
from orchestrator.training.metrics_log import read_metrics


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """The tiny model runs fastest on one thread."""


@pytest.mark.parametrize(("log_every", "logged"), [(1, [1, 2, 3, 4]), (3, [2, 3, 4])])
def test_evaluation_during_training_keeps_the_best_adapter(
    tiny_base_dir, tmp_path, log_every, logged, monkeypatch
):
    """Every evaluated step is logged, also one that is not a log_every step. The best adapter
    is chosen on validation prompts; test prompts only measure the chosen model."""
    fronts = []

    def recorded(*args, **kwargs):
        fronts.append(evaluate_on_grid(*args, **kwargs))
        return fronts[-1]

    monkeypatch.setattr(selection, "evaluate_on_grid", recorded)
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_base_dir}",
            "data.num_pairs=64",
            "adapter.rank=2",
            "train.batch_size=8",
            "train.max_steps=4",
            f"train.log_every={log_every}",
            "eval.every=2",
            "eval.coarse_grid_divisions=2",
            "eval.coarse_num_prompts=3",
            "eval.max_new_tokens=8",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    run_dir = Path(cfg.output_dir)
    train_rank(cfg, run_dir, load_training_pairs(cfg.data))
    history = read_metrics(run_dir)
    assert [m["step"] for m in history] == logged
    evaluated = {m["step"]: m["hypervolume"] for m in history if "hypervolume" in m}
    assert sorted(evaluated) == [2, 4]
    best = json.loads((run_dir / "best" / "best.json").read_text())
    assert best["hypervolume"] == max(evaluated.values())
    assert evaluated[best["step"]] == best["hypervolume"]
    assert (run_dir / "best" / "adapter" / "adapter.safetensors").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "adapter" / "adapter.safetensors").is_file()
    validation = AssistantTask().prompts("validation")
    assert len(fronts) == 2
    assert all({s["prompt"] for s in f.samples} <= set(validation[:3]) for f in fronts)


def test_a_run_at_a_fixed_lambda_records_it_in_its_adapter(tiny_base_dir, tmp_path):
    """So that `moa eval` and `moa serve` run it at that λ only (a DPS model, an expert, an SPO
    stage); a λ-conditioned run records none."""
    common = [
        f"model.name_or_path={tiny_base_dir}",
        "data.num_pairs=16",
        "adapter.rank=2",
        "train.batch_size=8",
        "train.max_steps=1",
        "eval.enabled=false",
    ]
    for extra, trained_at in [
        (["train.preference=[0.3, 0.7]"], (0.3, 0.7)),
        (["train.objective=harmless"], (0.0, 1.0)),
        ([], None),
    ]:
        run_dir = tmp_path / str(trained_at)
        cfg = load_config(None, [*common, *extra, f"output_dir={run_dir}"])
        train_rank(cfg, run_dir, load_training_pairs(cfg.data))
        assert read_adapter_config(run_dir / "adapter").trained_at == trained_at
