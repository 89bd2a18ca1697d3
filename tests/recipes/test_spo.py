"""`moa spo` on the shared Ray instance: its stages, each trained by Ray Train with the earlier
stages' margins and its anchor's log-probs shipped to the workers, its adapter and its point."""

import json

import pytest

from orchestrator.config import load_config
from orchestrator.evaluation.report import read_front
from orchestrator.recipes.spo import run_spo

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


SPO = ["eval.num_prompts=4", "eval.max_new_tokens=16", "eval.grid_divisions=2"]


def test_spo_run_writes_its_stages_adapter_and_point(tiny_config, tmp_path):
    cfg = tiny_config(tmp_path / "spo", *SPO, "spo.order=[harmless, helpful]")
    result = run_spo(cfg, progress=False)
    assert [s["objective"] for s in result.stages] == ["harmless", "helpful"]
    assert [s["margin_weight"] for s in result.stages] == [1.0, None]
    assert (tmp_path / "spo" / "adapter" / "adapter_config.json").is_file()
    stage_2 = load_config(tmp_path / "spo" / "stage_2" / "config.yaml")
    assert stage_2.train.preference == [0.0, 1.0]
    assert stage_2.adapter.init_from == str(tmp_path / "spo" / "stage_1" / "adapter")
    front = read_front(tmp_path / "spo" / "eval" / "front.json")
    assert (front.points == front.points[0]).all()
    assert json.loads((tmp_path / "spo" / "spo.json").read_text()) == result.stages
