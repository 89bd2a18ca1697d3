import contextlib
import io
import json

import pytest

from orchestrator.cli import main
from orchestrator.model.adapter_io import read_adapter_config
from orchestrator.recipes import run_folder

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--quick", "--output-dir", str(run_dir)]) == 0
    return run_dir, printed.getvalue()


@pytest.fixture(scope="module")
def quick_run(quick_demo):
    return quick_demo[0]


def test_quick_demo_writes_a_complete_run_folder(quick_run):
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "eval/front.json",
        "eval/front.png",
        "eval/report.md",
    ):
        assert (quick_run / name).is_file(), name
    assert read_adapter_config(quick_run / "adapter").objective_names == ("helpful", "harmless")
    front = json.loads((quick_run / "eval" / "front.json").read_text())
    lambdas = [p["preference"] for p in front["points"]]
    assert lambdas == [[0.0, 1.0], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0]]
    assert set(front["metrics"]) >= {"hypervolume", "inner_product", "sparsity", "spacing"}
    base = front["base_point"]  # two objectives, reference (0, 0): the HV is a rectangle
    assert front["metrics"]["base_hypervolume"] == pytest.approx(base["helpful"] * base["harmless"])
    logged = [json.loads(line) for line in (quick_run / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 12 and logged[-1]["tokens_per_s"] > 0
    assert "![front](front.png)" in (quick_run / "eval" / "report.md").read_text()


def test_demo_prints_the_front_and_three_answers(quick_demo):
    run_dir, printed = quick_demo
    assert "hypervolume: front" in printed
    assert str(run_dir / "eval" / "front.png") in printed
    for lam in ("(1.00, 0.00)", "(0.50, 0.50)", "(0.00, 1.00)"):
        assert f"λ = {lam}:" in printed


def test_eval_reproduces_the_demo_front(quick_run, capsys, tmp_path):
    assert main(["eval", str(quick_run), "--output-dir", str(tmp_path / "again")]) == 0
    printed = capsys.readouterr().out
    assert "hypervolume" in printed
    # Greedy generation is deterministic: re-evaluating the saved adapter gives the same front.
    first = json.loads((quick_run / "eval" / "front.json").read_text())
    again = json.loads((tmp_path / "again" / "front.json").read_text())
    assert again["points"] == first["points"]


def test_eval_takes_overrides_after_its_options(quick_run, tmp_path):
    out = tmp_path / "coarse"
    args = ["eval", str(quick_run), "--output-dir", str(out), "eval.grid_divisions=2"]
    assert main(args) == 0
    front = json.loads((out / "front.json").read_text())
    assert [p["preference"] for p in front["points"]] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    with pytest.raises(SystemExit):
        main(["eval", str(quick_run), "--output-dir", str(out), "--frobnicate"])


def test_errors_are_one_line_and_exit_2(capsys, tmp_path):
    assert (
        main(["demo", "--quick", "--output-dir", str(tmp_path), "data.objectives=[helpful]"]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("moa demo: error:") and err.count("\n") == 1
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing"), "train.beta=1"]) == 2
    assert "only takes eval.* and generation.* overrides" in capsys.readouterr().err
    assert main(["demo", "--quick", "train.lr=1"]) == 2
    assert "unknown field 'train.lr'" in capsys.readouterr().err
    assert main(["demo", "--quick", "eval.enabled=false"]) == 2
    assert "needs eval.enabled: true" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "train.beta=1"]) == 2
    assert "only serve.* and model.* overrides" in capsys.readouterr().err
    out = f"output_dir={tmp_path / 'compare'}"
    assert main(["compare", out, "compare.methods=[sipo, dps]"]) == 2
    assert "sipo starts from panacea_ls" in capsys.readouterr().err
    assert main(["compare", out, "eval.enabled=false"]) == 2
    assert "it needs eval.enabled: true" in capsys.readouterr().err
    assert main(["spo", out, "spo.order=[helpful, helpful]"]) == 2
    assert "spo.order must list each objective" in capsys.readouterr().err
    assert not (tmp_path / "compare").exists()  # nothing half-written


def test_demo_with_three_objectives_evaluates_a_simplex_lattice(
    quick_run, tmp_path, capsys, monkeypatch, train_here
):
    """Trained in this process (the quick demo above trains on Ray), evaluated on the pool."""
    monkeypatch.setattr(run_folder, "train", train_here)
    run_dir = tmp_path / "three"
    objectives = "data.objectives=[helpful, harmless, concise]"
    shorter = ["train.max_steps=4", "eval.num_prompts=2", "eval.max_new_tokens=16"]
    assert main(["demo", "--quick", "--output-dir", str(run_dir), objectives, *shorter]) == 0
    front = json.loads((run_dir / "eval" / "front.json").read_text())
    assert len(front["points"]) == 15  # multiples of 1/4 on the 3-simplex
    assert set(front["points"][0]["scores"]) == {"helpful", "harmless", "concise"}
    printed = capsys.readouterr().out
    assert "λ = (0.33, 0.33, 0.33):" in printed and "λ = (0.00, 0.00, 1.00):" in printed
