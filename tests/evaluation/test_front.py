import json
import struct
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from orchestrator.evaluation import front as front_module
from orchestrator.evaluation.front import Front, evaluate_front, steerability
from orchestrator.evaluation.report import write_front
from orchestrator.model.svd_lora import inject_svd_lora


def echo_score(prompts, answers):
    """Scores an answer "w1 w2" (the weights the fake generator echoed) as (w1, 2·w2)."""
    scores = [[float(x) for x in answer.split()] for answer in answers]
    return np.array([[s[0], 2 * s[1]] for s in scores]) + np.array(
        [[0.01 * int(p[-1]), 0.0] for p in prompts]
    )


ORIGIN = {"reference_point": [0.0, 0.0]}


def test_front_averages_each_lambda_over_its_prompts(monkeypatch):
    def fake_generate(model, tokenizer, prompts, preferences, params, **options):
        return [f"{lam[0]:.2f} {lam[1]:.2f}" for lam in preferences.tolist()]

    monkeypatch.setattr(front_module, "generate", fake_generate)
    grid = torch.tensor([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    front = evaluate_front(None, None, echo_score, ("a", "b"), grid, ["p1", "p2", "p3"], **ORIGIN)
    # Point i = mean over prompts of (λ_1 + 0.01·k, 2·λ_2): prompt offsets 0.01, 0.02, 0.03.
    expected = np.array([[0.02, 2.0], [0.52, 1.0], [1.02, 0.0]])
    assert np.allclose(front.points, expected)
    assert front.reference_point == [0.0, 0.0]
    assert [s["preference"] for s in front.samples] == grid.tolist()
    metrics = front.metrics()
    # Hand-computed hypervolume of (0.02, 2), (0.52, 1), (1.02, 0) from (0, 0): the last point
    # has b = 0 and adds nothing; 0.02·2 + (0.52 − 0.02)·1 = 0.54.
    assert metrics["hypervolume"] == pytest.approx(0.54)
    # Inner product: mean of 2.0, 0.26 + 0.5, 1.02 = (2 + 0.76 + 1.02) / 3.
    assert metrics["inner_product"] == pytest.approx(3.78 / 3)
    assert metrics["spearman_a"] == pytest.approx(1.0)
    assert metrics["spearman_b"] == pytest.approx(1.0)


def test_a_model_trained_at_one_lambda_answers_every_row_at_it():
    """Its front is the one trade-off it was trained for, at every λ of the grid."""
    asked = []

    def answer(prompts, preferences, params):
        asked.append(preferences.clone())
        return [f"{lam[0]:.2f} {lam[1]:.2f}" for lam in preferences.tolist()]

    fixed = inject_svd_lora(nn.Sequential(nn.Linear(4, 4)), 2, rank=2, trained_at=[0.25, 0.75])
    grid = torch.tensor([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    front = evaluate_front(
        fixed, None, echo_score, ("a", "b"), grid, ["p1"], answer=answer, **ORIGIN
    )
    assert asked[0].tolist() == [[0.25, 0.75]] * 3
    assert np.allclose(front.points, [[0.26, 1.5]] * 3)
    assert front.preferences.tolist() == grid.tolist()
    steerable = inject_svd_lora(nn.Sequential(nn.Linear(4, 4)), 2, rank=2)
    evaluate_front(steerable, None, echo_score, ("a", "b"), grid, ["p1"], answer=answer, **ORIGIN)
    assert asked[1].tolist() == grid.tolist()


def test_steerability_is_spearman_and_zero_when_flat():
    weights = np.linspace(0, 1, 5)
    assert steerability(weights, np.array([0.1, 0.2, 0.3, 0.5, 0.4])) == pytest.approx(0.9)
    assert steerability(weights, -weights) == pytest.approx(-1.0)
    assert steerability(weights, np.ones(5)) == 0.0


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_report_files_for_two_and_three_objectives(tmp_path):
    two = Front(
        ("helpful", "harmless"),
        np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]),
        np.array([[0.1, 0.9], [0.5, 0.6], [0.8, 0.2]]),
        [0.0, 0.0],
        [{"preference": [1.0, 0.0], "prompt": "How?", "answer": "Like this."}],
        base_point=np.array([0.4, 0.5]),
    )
    write_front(tmp_path / "two", two)
    data = json.loads((tmp_path / "two" / "front.json").read_text())
    assert data["metrics"] == pytest.approx(two.metrics())
    assert data["points"][1] == {
        "preference": [0.5, 0.5],
        "scores": {"helpful": 0.5, "harmless": 0.6},
    }
    assert data["base_point"] == {"helpful": 0.4, "harmless": 0.5}
    assert data["metrics"]["base_hypervolume"] == pytest.approx(0.2)
    report = (tmp_path / "two" / "report.md").read_text()
    assert "| (0.50, 0.50) | 0.500 | 0.600 |" in report
    assert "| base_hypervolume | 0.2000 |" in report
    assert "Base model (adapter off): helpful 0.400, harmless 0.500." in report
    assert "> Like this." in report

    grid = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]])
    three = Front(("a", "b", "c"), grid, 0.2 + 0.6 * grid, [0.0, 0.0, 0.0])
    write_front(tmp_path / "three", three)
    width_two, _ = png_size(tmp_path / "two" / "front.png")
    width_three, _ = png_size(tmp_path / "three" / "front.png")
    assert width_three > 2.5 * width_two  # three pairwise projections side by side
    assert not list(tmp_path.glob("**/.*tmp*"))  # atomic writes leave no temporary files


def test_sampled_front_answers_each_prompt_several_times(monkeypatch):
    seen = {}

    def fake_generate(model, tokenizer, prompts, preferences, params, **options):
        seen["prompts"], seen["params"] = list(prompts), params
        # Odd rows score 0.1 higher: the point must average over every answer of every prompt.
        return [
            f"{lam[0] + 0.1 * (i % 2):.2f} {lam[1]:.2f}"
            for i, lam in enumerate(preferences.tolist())
        ]

    monkeypatch.setattr(front_module, "generate", fake_generate)
    grid = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    sampling = front_module.SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)
    front = evaluate_front(
        None,
        None,
        echo_score,
        ("a", "b"),
        grid,
        ["p1", "p2"],
        **ORIGIN,
        sampling=sampling,
        answers_per_prompt=2,
    )
    assert seen["prompts"] == ["p1", "p1", "p2", "p2"] * 2
    # Row i samples with seed + i, as generate would give it, wherever the row is generated.
    assert seen["params"] == [replace(sampling, seed=3 + i) for i in range(8)]
    assert np.allclose(front.points, [[0.015 + 0.05, 2.0], [1.015 + 0.05, 0.0]])
