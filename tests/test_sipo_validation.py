"""`moa sipo` rejects a bad run on the driver, before any Ray worker or actor starts."""

import pytest
import yaml

import orchestrator.distributed.train as distributed_train
from orchestrator.cli import main


def refuse_workers(*args, **kwargs):
    raise AssertionError("a worker was started")


@pytest.fixture(autouse=True)
def _no_workers(monkeypatch):
    monkeypatch.setattr(distributed_train, "ensure_ray", refuse_workers)
    monkeypatch.setattr(distributed_train, "TorchTrainer", refuse_workers)


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"


@pytest.fixture
def config_file(tmp_path, run_dir, tiny_base_dir):
    path = tmp_path / "sipo.yaml"
    config = {
        "model": {"name_or_path": str(tiny_base_dir)},
        "data": {"num_pairs": 40},
        "train": {"batch_size": 4, "max_steps": 2},
        "output_dir": str(run_dir),
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["sipo.judge=reward_models"], ["sipo", "needs reward_models"]),
        (
            ["sipo.judge=reward_models", "sipo.reward_models={helpful: some/model}"],
            ["sipo.reward_models", "one model for each objective"],
        ),
        (["sipo.judge=oracle"], ["sipo.judge", "'oracle'"]),
        (["sipo.candidates_per_preference=4"], ["candidates_per_preference", "temperature"]),
        (["sipo.candidate_divisions=1"], ["sipo.candidate_divisions"]),
        (["sipo.rounds=0"], ["sipo.rounds"]),
        (["sipo.beam=2"], ["unknown field 'sipo.beam'"]),
        (["sipo.init_from=/no/such/run"], ["sipo.init_from", "not a finished Panacea run"]),
        (["data.conflict_fraction=0"], ["no conflicting pairs"]),
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


def test_a_valid_config_gets_as_far_as_starting_workers(config_file, run_dir):
    with pytest.raises(AssertionError, match="a worker was started"):
        main(["sipo", str(config_file)])
    assert (run_dir / "config.yaml").is_file()


def test_resume_takes_no_overrides(capsys, run_dir):
    assert main(["sipo", "--resume", str(run_dir), "sipo.rounds=2"]) == 2
    assert "no config or overrides" in capsys.readouterr().err
