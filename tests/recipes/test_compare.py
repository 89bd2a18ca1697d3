"""The baselines and `moa compare` end to end on a few steps of the tiny task: which models each
method trains or reuses, the frozen inputs of the margins (Ray tasks) against single-process
values, the table, and a comparison resumed without training again. The models train in this
process (train_in_process): what this tests is the recipe; SPO's margins and anchors through Ray
Train are tested in tests/recipes/test_spo.py."""

import json

import numpy as np
import pytest
import torch

from orchestrator.algorithms.panacea import reference_logprobs
from orchestrator.config import load_config
from orchestrator.data.encoding import collate_pairs, encode_pairs
from orchestrator.data.sources import load_training_pairs
from orchestrator.errors import MoaError
from orchestrator.evaluation.report import read_front
from orchestrator.model.loading import load_model
from orchestrator.model.svd_lora import inject_svd_lora
from orchestrator.recipes.compare import run_compare

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

METHODS = ["panacea_ls", "spo", "sipo", "dpo_soups", "dps", "modpo"]


COMPARE = [
    "eval.num_prompts=4",
    "eval.max_new_tokens=16",
    "checkpoint.every=2",
    "sipo.max_pairs=4",
    "sipo.max_new_tokens=16",
    f"compare.methods=[{', '.join(METHODS)}]",
    "compare.seeds=[3]",
    "compare.grid_divisions=2",
]


@pytest.fixture(scope="module")
def comparison(tiny_config, tmp_path_factory, train_in_process):
    cfg = tiny_config(tmp_path_factory.mktemp("compare") / "out", *COMPARE)
    return cfg, run_compare(cfg, progress=False)


def test_each_method_is_evaluated_on_the_same_grid_with_its_models(comparison):
    cfg, result = comparison
    rows = {r["method"]: r for r in result.results}
    assert list(rows) == METHODS
    models = {m: rows[m]["models"] for m in METHODS}
    assert models == {"panacea_ls": 1, "spo": 1, "sipo": 1, "dpo_soups": 2, "dps": 3, "modpo": 3}
    size = rows["panacea_ls"]["trainable_parameters"]
    assert all(rows[m]["trainable_parameters"] == models[m] * size for m in METHODS)
    fronts = {m: read_front(result.out_dir / rows[m]["front"]) for m in METHODS}
    for front in fronts.values():
        assert front.preferences.tolist() == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
        assert front.reference_point == fronts["dps"].reference_point
    # DPS and MODPO are the DPO experts at the vertices: the same models, the same answers.
    for vertex in (0, 2):
        assert np.array_equal(fronts["dps"].points[vertex], fronts["modpo"].points[vertex])
    # SPO is one model: the same answers at every λ, so no sparsity or spacing.
    assert (fronts["spo"].points == fronts["spo"].points[0]).all()
    assert rows["spo"]["sparsity"] is None and rows["dps"]["sparsity"] is not None
    # The methods that share the experts count their training time.
    experts = sum(
        json.loads((result.out_dir / "seed_3" / "experts" / o / "train.json").read_text())[
            "train_seconds"
        ]
        for o in cfg.data.objectives
    )
    assert rows["dpo_soups"]["seconds"] == pytest.approx(experts)
    assert rows["dps"]["seconds"] > experts and rows["modpo"]["seconds"] > experts


def test_vertices_and_the_first_spo_stage_reuse_the_experts(comparison):
    _, result = comparison
    seed = result.out_dir / "seed_3"
    assert sorted(p.name for p in (seed / "dps").iterdir()) == ["lambda_0.500_0.500"]
    assert (seed / "modpo" / "lambda_0.500_0.500" / "adapter").is_dir()
    assert not (seed / "spo" / "stage_1").exists()
    stage_2 = load_config(seed / "spo" / "stage_2" / "config.yaml")
    assert stage_2.train.objective == "harmless"
    assert stage_2.train.preference == [1.0, 0.0]  # the first objective's vertex, all stages
    assert stage_2.train.reference == "initial"
    assert stage_2.adapter.init_from == str(seed / "experts" / "helpful" / "adapter")
    modpo = load_config(seed / "modpo" / "lambda_0.500_0.500" / "config.yaml")
    assert modpo.train.objective == "helpful"  # the first of two equal weights
    assert modpo.train.beta == pytest.approx(2 * stage_2.train.beta)  # β / λ_main


def test_the_margins_inputs_equal_single_process_log_probs(comparison, tiny_base_dir, tokenizer):
    cfg, result = comparison
    seed = result.out_dir / "seed_3"
    pairs = load_training_pairs(cfg.data)
    encoded = encode_pairs(
        tokenizer, pairs, cfg.data.max_prompt_tokens, cfg.data.max_response_tokens
    )
    model = inject_svd_lora(load_model(str(tiny_base_dir)), 2, rank=4, alpha=cfg.adapter.alpha)
    local = reference_logprobs(model, collate_pairs(encoded, tokenizer.pad_token_id))
    base = torch.load(seed / "spo" / "logprobs" / "stage_0.pt")["logprobs"]
    assert torch.allclose(base, local, atol=1e-4)
    rewards = torch.load(seed / "modpo" / "rewards.pt")["rewards"]
    assert rewards.shape == (len(pairs), 2, 2)
    stage_1 = torch.load(seed / "spo" / "logprobs" / "stage_1.pt")["logprobs"]  # helpful expert
    assert torch.allclose(rewards[..., 0], cfg.train.beta * (stage_1 - base), atol=1e-5)


def test_the_report_and_a_resumed_comparison_that_trains_nothing(comparison, tiny_config):
    cfg, result = comparison
    report = (result.out_dir / "report.md").read_text()
    for label in ("Panacea (LS)", "SPO", "SIPO", "DPO soups", "DPS", "MODPO"):
        assert f"| {label} |" in report
    assert (result.out_dir / "fronts.png").stat().st_size > 0
    trained = sorted(result.out_dir.rglob("train.json"))
    stamps = [p.stat().st_mtime_ns for p in trained]
    again = run_compare(cfg, progress=False)
    assert [p.stat().st_mtime_ns for p in trained] == stamps
    assert again.results == result.results
    changed = tiny_config(result.out_dir, *COMPARE, "train.max_steps=3")
    with pytest.raises(MoaError, match="holds a comparison with another config"):
        run_compare(changed, progress=False)
