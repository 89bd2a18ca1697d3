import json

import pytest

from orchestrator.config import load_config
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.errors import MoaError
from orchestrator.workflow import evaluate_run, load_run, run_panacea

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


@pytest.fixture
def jsonl_config(tiny_base_dir, tmp_path):
    """A run on a pairs file (not the built-in task), a few steps, no front evaluation."""
    path = tmp_path / "pairs.jsonl"
    AssistantTask(seed=4).preference_pairs(48, ("helpful", "concise")).save_jsonl(path)
    return load_config(
        None,
        [
            f"model.name_or_path={tiny_base_dir}",
            "data.source=jsonl",
            f"data.path={path}",
            "data.objectives=[helpful, concise]",
            "adapter.rank=2",
            "train.batch_size=4",
            "train.max_steps=3",
            "train.log_every=1",
            "eval.enabled=false",
            f"output_dir={tmp_path / 'run'}",
        ],
    )


def test_a_run_on_a_pairs_file_trains_and_saves(jsonl_config):
    result = run_panacea(jsonl_config, progress=False)
    assert result.front is None
    assert [r["step"] for r in result.history] == [1, 2, 3]
    logged = [
        json.loads(line)
        for line in (result.run_dir / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    assert [line["step"] for line in logged] == [1, 2, 3]
    cfg, _, model = load_run(result.run_dir)
    assert cfg == jsonl_config
    assert model.svd_lora_config.objective_names == ("helpful", "concise")
    with pytest.raises(MoaError, match="needs the built-in task's scorers"):
        evaluate_run(cfg, model, None, result.run_dir / "eval")


def test_a_finished_run_is_never_silently_mixed_with_a_new_one(jsonl_config):
    first = run_panacea(jsonl_config, progress=False)
    (first.run_dir / "eval").mkdir()
    (first.run_dir / "eval" / "front.json").write_text("{}")  # a result of the earlier run
    with pytest.raises(MoaError, match="already holds a run"):
        run_panacea(jsonl_config, progress=False)
    assert (first.run_dir / "adapter" / "adapter.safetensors").is_file()  # nothing was lost
    run_panacea(jsonl_config, progress=False, overwrite=True)
    assert not (first.run_dir / "eval").exists()  # stale results of the old run are gone
    assert (first.run_dir / "adapter" / "adapter.safetensors").is_file()
