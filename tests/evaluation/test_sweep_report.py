"""A sweep's Pareto sets of trials and its best trial, on hand-made trials whose sets are worked
out by hand; the table and the picture."""

import numpy as np

from orchestrator.config import load_config
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.sweep_report import (
    best_trial,
    mark_pareto_sets,
    plot_sweep,
    render_sweep,
)


def trials():
    def row(name, hv, ip, compute, status="finished"):
        return {
            "trial": name,
            "params": {"train.beta": 0.1},
            "status": status,
            "step": 4,
            "hypervolume": hv,
            "inner_product": ip,
            "compute": compute,
            "error": "RuntimeError: boom" if status == "error" else None,
        }

    return [
        row("a", 0.7, 0.80, 100.0),
        row("b", 0.6, 0.90, 50.0),
        row("c", 0.5, 0.70, 200.0),  # dominated on both sets
        row("d", 0.7, 0.85, 150.0),  # beats a on inner product, loses on compute
        row("e", None, None, None, status="error"),
    ]


def test_pareto_sets_and_best_trial_match_the_hand_worked_sets():
    rows = trials()
    mark_pareto_sets(rows)
    assert [r["trial"] for r in rows if r["pareto_hv_ip"]] == ["b", "d"]
    assert [r["trial"] for r in rows if r["pareto_hv_compute"]] == ["a", "b"]
    assert best_trial(rows, "hypervolume")["trial"] == "d"  # ties with a; higher inner product
    assert best_trial(rows, "inner_product")["trial"] == "b"


def test_the_table_lists_every_trial_and_the_picture_is_written(tmp_path):
    rows = trials()
    mark_pareto_sets(rows)
    cfg = load_config(None, ["tune.space={train.beta: {grid: [0.1]}}"])
    # the chosen model on the test prompts: one point at each vertex of the grid, both (0.5, 0.5)
    front = Front(("helpful", "harmless"), np.eye(2), np.full((2, 2), 0.5), [-1.0, -1.0])
    text = render_sweep(cfg, rows, best_trial(rows, "hypervolume"), front)
    # hypervolume of (0.5, 0.5) against (-1, -1): 1.5²; inner product: mean of λ·(0.5, 0.5)
    assert (
        "The chosen model (trial d's best adapter) measured on 34 test prompts over the λ grid "
        "of 2 points: hypervolume 2.2500, inner product 0.5000 → best_front/." in text
    )
    assert "over 16 validation prompts" in text  # eval.coarse_num_prompts of the 26
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(rows)  # the header and one line per trial
    assert lines[4].startswith("| d (best) | 0.1 | finished | 4 | 0.7000 | 0.8500 | 150 | ✓ |  |")
    assert lines[5].startswith("| e | 0.1 | error | 4 | — | — | — |  |  |")
    assert "- e: RuntimeError: boom" in text
    plot_sweep(tmp_path / "pareto.png", rows, "hypervolume")
    assert (tmp_path / "pareto.png").read_bytes().startswith(b"\x89PNG")
