"""`moa train`'s recipe on a pairs file: what its run folder holds, and a finished run never mixed
with a new one. Trained in this process (train_in_process); Ray Train's runs of the same loop are
tested in tests/distributed/test_train.py."""

import json
import shutil

import pytest

from orchestrator.config import load_config, with_fields
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.errors import MoaError
from orchestrator.recipes.panacea import run_panacea
from orchestrator.recipes.run_folder import load_trained

pytestmark = pytest.mark.usefixtures("train_in_process")  # the second test's run too


@pytest.fixture(scope="module")
def jsonl_config(tiny_base_dir, tmp_path_factory):
    """A run on a pairs file (not the built-in task), a few steps, no front evaluation."""
    tmp_path = tmp_path_factory.mktemp("jsonl")
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


@pytest.fixture(scope="module")
def finished(jsonl_config, train_in_process):
    return run_panacea(jsonl_config, progress=False)


def test_a_run_on_a_pairs_file_trains_and_saves(jsonl_config, finished):
    result = finished
    assert result.front is None
    assert [r["step"] for r in result.history] == [1, 2, 3]
    logged = [
        json.loads(line)
        for line in (result.run_dir / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    assert [line["step"] for line in logged] == [1, 2, 3]
    cfg, _, model = load_trained(result.run_dir)
    assert cfg == jsonl_config
    assert model.svd_lora_config.objective_names == ("helpful", "concise")


def test_a_finished_run_is_never_silently_mixed_with_a_new_one(jsonl_config, finished, tmp_path):
    """On a copy of the finished run: refused without --overwrite, then replaced with it."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished.run_dir, run_dir)
    cfg = with_fields(jsonl_config, {"output_dir": str(run_dir)})
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "front.json").write_text("{}")  # a result of the earlier run
    with pytest.raises(MoaError, match="already holds a finished run"):
        run_panacea(cfg, progress=False)
    assert (run_dir / "adapter" / "adapter.safetensors").is_file()  # nothing was lost
    run_panacea(cfg, progress=False, overwrite=True)
    assert not (run_dir / "eval").exists()  # stale results of the old run are gone
    assert (run_dir / "adapter" / "adapter.safetensors").is_file()
