"""The run-folder protocol every recipe follows: a new run refuses a folder that holds one, a
resumable one is kept under a config that agrees on its sections (serve.port is not one of a
training run's) and refused under one that does not, and a trained model is not trained again."""

import json
from pathlib import Path

import pytest
import yaml

from orchestrator.config import load_config, with_fields
from orchestrator.errors import MoaError
from orchestrator.recipes import run_folder
from orchestrator.recipes.run_folder import (
    CONTINUED_RUN,
    TRAINING_RUN,
    RunKind,
    claim_run,
    open_run,
    start_run,
    train_into,
)

SWEEP_LIKE = RunKind("sweep", (*TRAINING_RUN.sections, "tune"), (*TRAINING_RUN.outputs, "trials"))


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"output_dir={tmp_path / 'run'}", "train.max_steps=5"])


@pytest.fixture
def trainings(monkeypatch):
    """The Ray Train launcher replaced by one that writes an adapter and counts its calls."""
    calls = []

    def train(cfg, run_dir, pairs, **options):
        calls.append(run_dir)
        (run_dir / "adapter").mkdir()
        return 1.5

    monkeypatch.setattr(run_folder, "train", train)
    return calls


def saved(run_dir):
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_a_new_run_refuses_a_folder_with_a_run_and_replaces_only_its_outputs(cfg, tmp_path):
    run_dir = start_run(cfg, TRAINING_RUN)
    (run_dir / "adapter").mkdir()
    (run_dir / "notes.txt").write_text("mine")  # not an output of a training run
    (run_dir / "train.json").write_text("{}")  # finished
    with pytest.raises(MoaError, match=r"already holds a finished run.*--overwrite"):
        start_run(cfg, TRAINING_RUN)
    assert (run_dir / "adapter").is_dir()
    changed = with_fields(cfg, {"train.max_steps": 7})
    start_run(changed, TRAINING_RUN, overwrite=True)
    assert not (run_dir / "adapter").exists()
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert saved(run_dir)["train"]["max_steps"] == 7


def test_a_stopped_run_is_told_how_to_resume_and_what_overwrite_deletes(cfg):
    run_dir = start_run(cfg, TRAINING_RUN)
    for step in (4, 8):
        (run_dir / "checkpoints" / f"checkpoint_{step:06d}").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("")
    (run_dir / "logs").mkdir()
    expected = (
        rf"output_dir {run_dir} holds a stopped run \(last checkpoint at step 8\); continue it "
        rf"with `moa train --resume {run_dir}`, or pass --overwrite to start again, which "
        r"deletes checkpoints, logs, metrics.jsonl$"
    )
    with pytest.raises(MoaError, match=expected):
        start_run(cfg, TRAINING_RUN)
    assert (run_dir / "checkpoints" / "checkpoint_000008").is_dir()


def test_a_resumable_run_is_kept_when_only_sections_it_does_not_read_change(cfg):
    run_dir = claim_run(cfg, SWEEP_LIKE)
    (run_dir / "trials").mkdir()
    served_elsewhere = with_fields(cfg, {"serve.port": 8123})
    assert claim_run(served_elsewhere, SWEEP_LIKE) == run_dir
    assert (run_dir / "trials").is_dir()  # kept
    assert saved(run_dir)["serve"]["port"] == 8123  # the config as it was last given

    retuned = with_fields(cfg, {"tune.num_samples": 3})
    with pytest.raises(MoaError, match=r"holds a sweep with another config \(tune differ\)"):
        claim_run(retuned, SWEEP_LIKE)
    assert (run_dir / "trials").is_dir()  # nothing removed for a refused call
    claim_run(retuned, SWEEP_LIKE, overwrite=True)
    assert not (run_dir / "trials").exists()


def test_a_folder_without_a_config_is_taken_as_it_is(cfg):
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir()
    (run_dir / "trials").mkdir()  # not a run of ours: nothing says it is
    claim_run(cfg, SWEEP_LIKE)
    assert (run_dir / "trials").is_dir() and saved(run_dir)["train"]["max_steps"] == 5


def test_a_continued_model_is_kept_wherever_its_run_put_the_adapter_it_starts_from(cfg, tmp_path):
    """An SPO stage or a SIPO re-alignment starts from an adapter inside its run folder, spelled
    as the run was started or resumed (relative, absolute, moved)."""
    started = with_fields(cfg, {"adapter.init_from": "runs/sipo/panacea/adapter"})
    resumed = with_fields(cfg, {"adapter.init_from": str(tmp_path / "runs/sipo/panacea/adapter")})
    run_dir = claim_run(started, CONTINUED_RUN)
    (run_dir / "checkpoints").mkdir()
    assert claim_run(resumed, CONTINUED_RUN) == run_dir
    assert (run_dir / "checkpoints").is_dir()
    other = with_fields(resumed, {"adapter.rank": 4})
    with pytest.raises(MoaError, match=r"\(adapter differ\)"):
        claim_run(other, CONTINUED_RUN)
    with pytest.raises(MoaError, match=r"\(adapter differ\)"):
        claim_run(started, TRAINING_RUN)  # a model that starts from an adapter of its own


def test_a_moved_run_folder_opens_where_it_is(cfg, tmp_path):
    start_run(cfg, TRAINING_RUN)
    (tmp_path / "run").rename(tmp_path / "moved")
    assert open_run(tmp_path / "moved").output_dir == str(tmp_path / "moved")
    with pytest.raises(MoaError, match=r"not a run folder: config\.yaml is missing"):
        open_run(tmp_path / "run")


def test_a_trained_model_is_reused_and_a_changed_one_refused(cfg, trainings):
    adapter, seconds = train_into(cfg, pairs=None)
    assert adapter == Path(cfg.output_dir) / "adapter" and seconds == 1.5
    assert json.loads((adapter.parent / "train.json").read_text()) == {"train_seconds": 1.5}
    again = train_into(with_fields(cfg, {"serve.port": 8123}), pairs=None)
    assert again == (adapter, 1.5) and len(trainings) == 1  # done: not trained again
    with pytest.raises(MoaError, match=r"holds a run with another config \(train differ\)"):
        train_into(with_fields(cfg, {"train.max_steps": 6}), pairs=None)
    assert len(trainings) == 1
