"""`moa train` and `moa sipo` reject a bad run on the driver, before any Ray worker starts."""

import json

import pytest
import yaml

import orchestrator.distributed.generation as generation
import orchestrator.distributed.train as distributed_train
from orchestrator.cli import main


def refuse_workers(*args, **kwargs):
    raise AssertionError("a worker was started")


@pytest.fixture(autouse=True)
def _no_workers(monkeypatch):
    monkeypatch.setattr(distributed_train, "ensure_ray", refuse_workers)
    monkeypatch.setattr(distributed_train, "TorchTrainer", refuse_workers)
    monkeypatch.setattr(generation, "ensure_ray", refuse_workers)
    monkeypatch.setattr(generation, "GenerationPool", refuse_workers)


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"


@pytest.fixture
def config_file(tmp_path, run_dir, tiny_base_dir):
    """A valid config: the session's tiny model on a small built-in task."""
    path = tmp_path / "run.yaml"
    config = {
        "model": {"name_or_path": str(tiny_base_dir)},
        "data": {"num_pairs": 40},
        "train": {"batch_size": 4, "max_steps": 2},
        "output_dir": str(run_dir),
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def pairs_file(tmp_path):
    """A jsonl dataset labelled for helpful and harmless only."""
    path = tmp_path / "pairs.jsonl"
    rows = [{"objectives": ["helpful", "harmless"]}]
    rows += [
        {
            "prompt": f"question {i}",
            "response_a": "yes",
            "response_b": "no",
            "labels": {"helpful": "a", "harmless": "b"},
        }
        for i in range(20)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def refused(capsys, args: list[str]) -> str:
    """The error line of a `moa train` that exits 2."""
    assert main(["train", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("moa train: error: ")
    assert captured.err.count("\n") == 1
    return captured.err


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["train.lr=0.1"], ["unknown field 'train.lr'"]),
        (["train.max_steps=abc"], ["train.max_steps", "'abc'"]),
        (["adapter.rank=0"], ["adapter.rank"]),
        (["train.learning_rate=-1"], ["train.learning_rate", "greater than 0"]),
        (["data.objectives=[helpful, funny]"], ["data:", "funny", "assistant task"]),
        (
            ["data.num_pairs=10", "train.batch_size=8", "train.grad_accum_steps=2"],
            ["fewer than one global batch of 16", "train.batch_size"],
        ),
        (
            ["scaling.num_workers=4", "data.num_pairs=12"],
            ["global batch of 16", "scaling.num_workers"],
        ),
        (
            ["scaling.strategy=deepspeed", "scaling.deepspeed.offload_params=true"],
            ["scaling.deepspeed", "offload_params needs zero_stage: 3"],
        ),
        (
            [
                "scaling.strategy=deepspeed",
                "scaling.deepspeed.zero_stage=3",
                "eval.every=1",
            ],
            ["eval.every", "zero_stage 3"],
        ),
        (
            [
                "scaling.strategy=deepspeed",
                "scaling.deepspeed.zero_stage=3",
                "eval.every=0",
                "train.reference=initial",
            ],
            ["train.reference: initial", "zero_stage 3"],
        ),
        (["train.reference=policy"], ["train.reference", "'policy'"]),
        (["adapter.init_from=/no/such/adapter"], ["adapter.init_from", "adapter_config.json"]),
        (
            ["data.max_response_tokens=250"],
            ["data.max_prompt_tokens + data.max_response_tokens (64 + 250)", "(256 tokens)"],
        ),
        (["eval.max_new_tokens=200"], ["data.max_prompt_tokens + eval.max_new_tokens (64 + 200)"]),
        (["scaling.deepspeed.offload_optimizer=true"], ["scaling.strategy is ddp"]),
        (
            ["train.preference_per_pair=true"],
            ["data: train.preference_per_pair: pair 1 has no preference"],
        ),
    ],
)
def test_bad_config_is_refused_before_any_worker(capsys, config_file, run_dir, overrides, names):
    err = refused(capsys, [str(config_file), *overrides])
    for name in names:
        assert name in err
    assert not run_dir.exists()


def test_objectives_the_jsonl_dataset_lacks(capsys, config_file, run_dir, pairs_file):
    overrides = [
        "data.source=jsonl",
        f"data.path={pairs_file}",
        "eval.enabled=false",
        "data.num_pairs=2000",  # ignored for files; only the file's pairs count
    ]
    err = refused(capsys, [str(config_file), *overrides, "data.objectives=[helpful, funny]"])
    assert "data:" in err and "['funny']" in err and "not in this dataset" in err
    assert not run_dir.exists()

    # The same dataset with objectives it has gets as far as starting the workers.
    with pytest.raises(AssertionError, match="a worker was started"):
        main(["train", str(config_file), *overrides])


def test_a_valid_config_gets_as_far_as_starting_workers(config_file, run_dir):
    """The control for every refusal here: without a mistake, training would start."""
    with pytest.raises(AssertionError, match="a worker was started"):
        main(["train", str(config_file)])
    assert (run_dir / "config.yaml").is_file()


def test_existing_run_folder_needs_overwrite(capsys, config_file, run_dir):
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("earlier: run\n")
    err = refused(capsys, [str(config_file)])
    assert str(run_dir) in err and "--overwrite" in err
    assert f"holds a stopped run; continue it with `moa train --resume {run_dir}`" in err
    assert (run_dir / "config.yaml").read_text() == "earlier: run\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]

    with pytest.raises(AssertionError, match="a worker was started"):
        main(["train", str(config_file), "--overwrite"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == 2


def test_resume_of_a_folder_without_config(capsys, run_dir):
    err = refused(capsys, ["--resume", str(run_dir)])
    assert "config.yaml is missing" in err
    assert not run_dir.exists()


@pytest.mark.parametrize("extra", [["train.beta=0.2"], ["CONFIG"]])
def test_resume_takes_no_config_or_overrides(capsys, config_file, run_dir, extra):
    args = [str(config_file) if arg == "CONFIG" else arg for arg in extra]
    err = refused(capsys, ["--resume", str(run_dir), *args])
    assert "--resume" in err and "no config or overrides" in err
    assert not run_dir.exists()


def test_missing_model_directory(capsys, config_file, run_dir, tmp_path):
    err = refused(capsys, [str(config_file), f"model.name_or_path={tmp_path / 'no-model'}"])
    assert "model.name_or_path" in err and "no-model" in err
    assert not run_dir.exists()


def test_initial_adapter_of_another_shape(capsys, config_file, run_dir, tmp_path, tiny_base_dir):
    from orchestrator.model.adapter_io import save_adapter
    from orchestrator.model.loading import load_model
    from orchestrator.model.svd_lora import inject_svd_lora

    model = inject_svd_lora(load_model(str(tiny_base_dir)), 2, rank=4)
    save_adapter(model, tmp_path / "rank4")
    err = refused(capsys, [str(config_file), f"adapter.init_from={tmp_path / 'rank4'}"])
    assert "adapter.init_from" in err and "rank=4" in err and "needs 8" in err
    assert not run_dir.exists()

    with pytest.raises(AssertionError, match="a worker was started"):
        args = [f"adapter.init_from={tmp_path / 'rank4'}", "adapter.rank=4"]
        main(["train", str(config_file), *args])


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["sipo.judge=reward_models"], ["sipo", "needs reward_models"]),
        (
            ["sipo.judge=reward_models", "sipo.reward_models={helpful: {model: some/model}}"],
            ["sipo.reward_models", "one model for each objective"],
        ),
        (["sipo.judge=oracle"], ["sipo.judge", "'oracle'"]),
        (["sipo.candidates_per_preference=4"], ["candidates_per_preference", "temperature"]),
        (["sipo.candidate_divisions=1"], ["sipo.candidate_divisions"]),
        (["sipo.rounds=0"], ["sipo.rounds"]),
        (["sipo.beam=2"], ["unknown field 'sipo.beam'"]),
        (["sipo.init_from=/no/such/run"], ["sipo.init_from", "not a finished Panacea run"]),
        (["data.conflict_fraction=0"], ["no conflicting pairs"]),
        (["sipo.max_new_tokens=200"], ["data.max_prompt_tokens + sipo.max_new_tokens (64 + 200)"]),
    ],
)
def test_bad_sipo_config_is_refused_before_any_worker(
    capsys, config_file, run_dir, overrides, names
):
    assert main(["sipo", str(config_file), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moa sipo: error: ") and err.count("\n") == 1
    for name in names:
        assert name in err
    assert not run_dir.exists()


def test_ground_truth_judge_needs_the_built_in_task(capsys, config_file, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"objectives": ["helpful", "harmless"]}\n')
    args = ["data.source=jsonl", f"data.path={pairs}", "eval.enabled=false"]
    assert main(["sipo", str(config_file), *args, "sipo.judge=ground_truth"]) == 2
    assert "sipo.judge: ground_truth needs the built-in task" in capsys.readouterr().err


def test_a_valid_sipo_config_gets_as_far_as_starting_workers(config_file, run_dir):
    with pytest.raises(AssertionError, match="a worker was started"):
        main(["sipo", str(config_file)])
    assert (run_dir / "config.yaml").is_file()


def test_sipo_resume_takes_no_overrides(capsys, run_dir):
    assert main(["sipo", "--resume", str(run_dir), "sipo.rounds=2"]) == 2
    assert "no config or overrides" in capsys.readouterr().err
