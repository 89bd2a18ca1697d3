"""The console's view of a run training elsewhere: RunProgress follows RUN_DIR/metrics.jsonl."""

import json

from orchestrator.training.progress import RunProgress


def log(run_dir, *records):
    with (run_dir / "metrics.jsonl").open("a") as handle:
        for record in records:
            handle.write(json.dumps({"loss": 0.5, "tokens_per_s": 100.0, **record}) + "\n")


def test_the_bar_follows_the_logged_steps_and_each_evaluation_gets_one_line(tmp_path, capsys):
    log(tmp_path, {"step": 10}, {"step": 20, "hypervolume": 0.5, "inner_product": 0.6})
    with RunProgress(tmp_path, total_steps=60, interval_s=3600) as progress:
        assert progress.bar.n == 20  # a resumed run starts where it was logged
        log(tmp_path, {"step": 20}, {"step": 30})  # step 20 again: a restarted worker group
        progress.show_new()
        assert progress.bar.n == 30
        log(tmp_path, {"step": 40, "hypervolume": 0.4, "inner_product": 0.7})
        log(tmp_path, {"step": 50, "hypervolume": 0.7, "inner_product": 0.8})
    assert progress.bar.n == 50  # the last lines are shown when the run ends
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "step 40: hypervolume 0.4000, inner product 0.7000 (coarse grid, validation prompts)",
        "step 50: hypervolume 0.7000, inner product 0.8000 (coarse grid, validation prompts), "
        "the best so far: kept in best/",
    ]


def test_a_run_that_has_logged_nothing_yet_starts_at_zero(tmp_path):
    with RunProgress(tmp_path, total_steps=5, interval_s=0.01) as progress:
        assert progress.bar.n == 0
        log(tmp_path, {"step": 5})
    assert progress.bar.n == 5


def test_a_file_cut_back_to_its_checkpoint_is_read_again(tmp_path):
    log(tmp_path, {"step": 10}, {"step": 20}, {"step": 30})
    with RunProgress(tmp_path, total_steps=60, interval_s=3600) as progress:
        assert progress.bar.n == 30
        # The resumed worker keeps the lines up to its checkpoint (step 20), then logs on.
        (tmp_path / "metrics.jsonl").write_text("")
        log(tmp_path, {"step": 10}, {"step": 20})
        progress.show_new()
        assert progress.bar.n == 30
        log(tmp_path, {"step": 30}, {"step": 40})
        with (tmp_path / "metrics.jsonl").open("a") as handle:
            handle.write('{"step": 50, "lo')  # still being written
        progress.show_new()
        assert progress.bar.n == 40
        with (tmp_path / "metrics.jsonl").open("a") as handle:
            handle.write('ss": 0.5, "tokens_per_s": 100.0}\n')
        progress.show_new()
        assert progress.bar.n == 50
