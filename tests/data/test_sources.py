import pytest

from orchestrator.config import load_config
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.schema import PairDataset, PreferencePair
from orchestrator.data.sources import load_training_pairs
from orchestrator.errors import MoaError


def test_builtin_task_pairs_follow_the_data_section():
    cfg = load_config(None, ["data.num_pairs=40", "data.objectives=[helpful, concise]"])
    pairs = load_training_pairs(cfg.data)
    assert pairs.objectives == ("helpful", "concise")
    assert len(pairs) == 40 and pairs.conflicting_fraction() == 0.5
    train_prompts = set(AssistantTask().prompts("train"))
    assert all(p.prompt in train_prompts for p in pairs)


def test_jsonl_source_selects_objectives_and_holds_out_prompts(tmp_path):
    labels = {"helpful": "a", "harmless": "b", "concise": "tie"}
    pairs = [PreferencePair(f"question {i}", "x", "y", labels) for i in range(50)]
    PairDataset(("helpful", "harmless", "concise"), pairs).save_jsonl(tmp_path / "pairs.jsonl")
    cfg = load_config(
        None,
        [
            "data.source=jsonl",
            f"data.path={tmp_path / 'pairs.jsonl'}",
            "data.objectives=[harmless, helpful]",
            "data.test_fraction=0.5",
            "eval.enabled=false",
        ],
    )
    train = load_training_pairs(cfg.data)
    assert train.objectives == ("harmless", "helpful")
    assert 10 < len(train) < 40
    assert train[0].signs(train.objectives) == [-1, 1]


def test_objectives_the_data_lacks_are_named(tmp_path):
    cfg = load_config(None, ["data.objectives=[helpful, funny]"])
    with pytest.raises(MoaError, match="funny"):
        load_training_pairs(cfg.data)
