"""A SIPO round end to end on the shared Ray instance: candidates through the pool, implicit
judges, the Pareto filter, re-alignment, fronts; and a stopped run, re-aligned on Ray Train,
resumed to the adapter the uninterrupted run (re-aligned in this process) ends with."""

import json
import os

import pytest
from safetensors.torch import load_file

from orchestrator.config import load_config
from orchestrator.distributed.train import FAULT_ENV
from orchestrator.errors import MoaError
from orchestrator.evaluation.report import read_front
from orchestrator.recipes import run_folder
from orchestrator.recipes.panacea import run_panacea
from orchestrator.recipes.sipo import resume_sipo, run_sipo

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

COMMON = [
    "data.num_pairs=64",
    "adapter.rank=4",
    "train.batch_size=4",
    "train.warmup_steps=0",
    "train.log_every=1",
    "generation.batch_size=16",
    "eval.grid_divisions=2",
    "eval.num_prompts=4",
    "eval.max_new_tokens=24",
    "checkpoint.every=1",
]


@pytest.fixture(scope="module")
def panacea_run(tiny_base_dir, tmp_path_factory, train_here):
    """A short Panacea-DPO run that the SIPO runs start from (sipo.init_from), trained in this
    process; SIPO evaluates its starting front itself, so the run does not."""
    out = tmp_path_factory.mktemp("sipo") / "panacea"
    overrides = [f"model.name_or_path={tiny_base_dir}", *COMMON, "train.max_steps=8"]
    overrides += ["train.learning_rate=1e-2", "eval.enabled=false", f"output_dir={out}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_folder, "train", train_here)
        run_panacea(load_config(None, overrides), progress=False)
    return out


def sipo_config(tiny_base_dir, panacea_run, out):
    return load_config(
        None,
        [
            f"model.name_or_path={tiny_base_dir}",
            *COMMON,
            f"sipo.init_from={panacea_run}",
            "sipo.max_pairs=8",
            "sipo.max_new_tokens=24",
            "sipo.learning_rate=1e-2",
            f"output_dir={out}",
        ],
    )


@pytest.fixture(scope="module")
def finished(tiny_base_dir, panacea_run, tmp_path_factory, train_here):
    out = tmp_path_factory.mktemp("sipo") / "uninterrupted"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_folder, "train", train_here)
        return run_sipo(sipo_config(tiny_base_dir, panacea_run, out), progress=False)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_a_round_keeps_only_candidates_that_beat_both_originals_on_every_judge(finished):
    [stats] = finished.rounds
    round_dir = finished.run_dir / "round_1"
    records = read_jsonl(round_dir / "candidates.jsonl")
    assert stats["pairs_tried"] == len(records) == 8
    assert stats["candidates"] == 8 * 4  # λ_1 = 0.2, 0.4, 0.6, 0.8
    kept = 0
    for record in records:
        assert [c["preference"] for c in record["candidates"]] == [
            [0.2, 0.8],
            [0.4, 0.6],
            [0.6, 0.4],
            [0.8, 0.2],
        ]
        best = [max(a, b) for a, b in zip(record["rewards_a"], record["rewards_b"], strict=True)]
        winners = [
            i
            for i, c in enumerate(record["candidates"])
            if all(r > o for r, o in zip(c["rewards"], best, strict=True))
        ]
        if winners:
            sums = [sum(record["candidates"][i]["rewards"]) for i in winners]
            assert record["kept"] % 4 == winners[sums.index(max(sums))]
            kept += 1
        else:
            assert record["kept"] is None
    assert stats["survivors"] == kept >= 2  # enough for the re-alignment to run
    new_pairs = read_jsonl(round_dir / "pairs.jsonl")[1:]
    assert stats["new_pairs"] == len(new_pairs) == 2 * kept
    assert all(p["labels"] == {"helpful": "a", "harmless": "a"} for p in new_pairs)
    assert stats["acceptance_rate"] == pytest.approx(kept / 8)
    steps = [m["step"] for m in read_jsonl(round_dir / "train" / "metrics.jsonl")]
    assert steps == list(range(1, stats["realign_steps"] + 1))
    assert stats["realign_steps"] == -(-2 * stats["new_pairs"] // 4)  # 2 epochs, batch 4


def test_hypervolume_before_and_after_are_the_fronts_on_one_grid(finished, panacea_run):
    [stats] = finished.rounds
    before = read_front(finished.run_dir / "start_eval" / "front.json")
    after = read_front(finished.run_dir / "round_1" / "eval" / "front.json")
    assert (before.preferences == after.preferences).all()
    assert before.reference_point == after.reference_point
    assert stats["hypervolume_before"] == pytest.approx(before.metrics()["hypervolume"])
    assert stats["hypervolume_after"] == pytest.approx(after.metrics()["hypervolume"])
    assert json.loads((finished.run_dir / "sipo.json").read_text()) == finished.rounds
    assert (finished.run_dir / "fronts.png").stat().st_size > 0
    assert "| 1 | " in (finished.run_dir / "report.md").read_text()
    final = load_file(finished.adapter / "adapter.safetensors")
    start = load_file(panacea_run / "adapter" / "adapter.safetensors")
    assert max((final[k] - start[k]).abs().max() for k in final) > 1e-4  # re-alignment moved it


def test_a_stopped_run_resumes_at_the_phase_and_step_it_reached(
    finished, tiny_base_dir, panacea_run, tmp_path, monkeypatch
):
    # Relative paths, as a user types them: Ray's workers run in another working directory.
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(panacea_run, tmp_path)
    cfg = sipo_config(os.path.relpath(tiny_base_dir, tmp_path), relative, "stopped")
    monkeypatch.setenv(FAULT_ENV, "2")  # the re-alignment dies before its step 2
    with pytest.raises(MoaError, match="training failed"):
        run_sipo(cfg, progress=False)
    round_dir = tmp_path / "stopped" / "round_1"
    assert not (round_dir / "round.json").exists()
    selected = (round_dir / "candidates.jsonl").stat().st_mtime_ns
    assert (round_dir / "train" / "checkpoints" / "checkpoint_000001").is_dir()

    monkeypatch.delenv(FAULT_ENV)
    result = resume_sipo(tmp_path / "stopped", progress=False)
    assert (round_dir / "candidates.jsonl").stat().st_mtime_ns == selected  # not selected again
    assert (round_dir / "candidates.jsonl").read_text() == (
        finished.run_dir / "round_1" / "candidates.jsonl"
    ).read_text()  # the same seed selects the same candidates
    steps = [m["step"] for m in read_jsonl(round_dir / "train" / "metrics.jsonl")]
    assert steps == list(range(1, result.rounds[0]["realign_steps"] + 1))  # each step once
    resumed = load_file(result.adapter / "adapter.safetensors")
    expected = load_file(finished.adapter / "adapter.safetensors")
    assert max((resumed[k] - expected[k]).abs().max() for k in expected) < 1e-6
    ignore = ("seconds", "adapter")
    assert {k: v for k, v in result.rounds[0].items() if not k.endswith(ignore)} == {
        k: v for k, v in finished.rounds[0].items() if not k.endswith(ignore)
    }
