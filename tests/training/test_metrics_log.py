import importlib.machinery
import importlib.util
import json
import sys
import types

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orchestrator.config.sections import LoggingSection
from orchestrator.training.metrics_log import (
    MetricsLogger,
    console_line,
    flatten,
    read_metrics,
    truncate_after,
)

PARAMS = {"train": {"beta": 0.1, "seed": 0}, "data": {"objectives": ["helpful", "harmless"]}}


def step_metrics(step: int, loss: float = 0.5, **extra) -> dict:
    """What StepResult.as_dict() returns, plus the epoch and position the worker adds."""
    return {
        "step": step,
        "loss": loss,
        "objective_losses": [loss + 0.1, loss - 0.1],
        "preference": [0.25, 0.75],
        "learning_rate": 1e-3,
        "tokens": 2000,
        "seconds": 0.5,
        "data_seconds": 0.05,
        "compute_seconds": 0.4,
        "optimizer_seconds": 0.05,
        "tokens_per_s": 4000.0,
        "epoch": 0,
        "position": step,
        **extra,
    }


def logging_cfg(**changes) -> LoggingSection:
    return LoggingSection(**{"tensorboard": False, "mlflow": False, **changes})


def write_lines(path, steps) -> None:
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in steps))


def test_flatten_nested_dicts_and_lists():
    data = {"a": {"b": 1, "c": {"d": "x"}}, "e": [1, [2, 3]], "f": (4,), "g": None, "h": {}}
    assert flatten(data) == {
        "a.b": 1,
        "a.c.d": "x",
        "e.0": 1,
        "e.1.0": 2,
        "e.1.1": 3,
        "f.0": 4,
        "g": None,
    }
    assert flatten({}) == {}


def test_truncate_after_keeps_steps_up_to_k(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [1, 2, 3, 4, 5])
    truncate_after(path, 3)
    assert [line["step"] for line in read_metrics(tmp_path)] == [1, 2, 3]
    truncate_after(path, 0)
    assert path.read_text() == ""
    truncate_after(tmp_path / "missing.jsonl", 2)  # nothing to truncate: no error, no file
    assert not (tmp_path / "missing.jsonl").exists()


def test_read_metrics(tmp_path):
    assert read_metrics(tmp_path) == []
    write_lines(tmp_path / "metrics.jsonl", [10, 20])
    assert read_metrics(tmp_path) == [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 2.0}]


def test_console_line():
    line = console_line(step_metrics(7, loss=0.123456))
    assert line == (
        "step 7 | loss 0.1235 | lr 1.00e-03 | 4000 tok/s | data 0.05s fwd/bwd 0.40s opt 0.05s"
    )
    with_eval = console_line(step_metrics(8, hypervolume=0.25, eval_seconds=3.21))
    assert "| hypervolume 0.2500 |" in with_eval
    assert with_eval.endswith("| eval 3.2s")


def test_logger_writes_a_json_line_and_a_console_line_per_call(tmp_path):
    printed = []
    logger = MetricsLogger(tmp_path, logging_cfg(), PARAMS, console=printed.append)
    for step in (1, 2, 3):
        logger.log(step_metrics(step, loss=step / 4))
    logger.close()
    assert read_metrics(tmp_path) == [step_metrics(s, loss=s / 4) for s in (1, 2, 3)]
    assert len(printed) == 3
    assert printed[2].startswith("step 3 | loss 0.7500 |")
    assert "4000 tok/s" in printed[2]
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_scalars(tmp_path):
    logger = MetricsLogger(tmp_path, logging_cfg(tensorboard=True), PARAMS, console=lambda _: None)
    for step in (2, 4):
        logger.log(step_metrics(step, loss=step / 8))
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "objective_losses.0", "preference.1", "tokens_per_s", "epoch"} <= tags
    assert "step" not in tags
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(2, 0.25), (4, 0.5)]
    assert [e.value for e in events.Scalars("objective_losses.1")] == pytest.approx([0.15, 0.4])


def test_resumed_logger_drops_lines_after_its_checkpoint(tmp_path):
    first = MetricsLogger(tmp_path, logging_cfg(), PARAMS, console=lambda _: None)
    for step in (1, 2, 3, 4):
        first.log(step_metrics(step, loss=1.0))
    first.close()

    resumed = MetricsLogger(tmp_path, logging_cfg(), PARAMS, resume_step=2, console=lambda _: None)
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2]
    for step in (3, 4):
        resumed.log(step_metrics(step, loss=2.0))
    resumed.close()
    assert [(m["step"], m["loss"]) for m in read_metrics(tmp_path)] == [
        (1, 1.0),
        (2, 1.0),
        (3, 2.0),
        (4, 2.0),
    ]


@pytest.fixture
def fake_mlflow(monkeypatch):
    """An importable `mlflow` module that records its calls (the real one is not installed)."""
    module = types.ModuleType("mlflow")
    module.__spec__ = importlib.machinery.ModuleSpec("mlflow", loader=None)
    module.calls = []
    for name in ("set_tracking_uri", "start_run", "log_params", "log_metrics", "end_run"):
        setattr(
            module,
            name,
            lambda *args, _name=name, **kwargs: module.calls.append((_name, args, kwargs)),
        )
    monkeypatch.setitem(sys.modules, "mlflow", module)
    return module


def test_mlflow_records_params_metrics_and_run(tmp_path, fake_mlflow):
    run_dir = tmp_path / "my-run"
    run_dir.mkdir()
    logger = MetricsLogger(run_dir, logging_cfg(mlflow=True), PARAMS, console=lambda _: None)
    logger.log(step_metrics(5, loss=0.25, note="text is not a metric"))
    logger.close()

    names = [name for name, _, _ in fake_mlflow.calls]
    assert names == ["start_run", "log_params", "log_metrics", "end_run"]
    assert fake_mlflow.calls[0][2] == {"run_name": "my-run"}
    assert fake_mlflow.calls[1][1] == (
        {
            "train.beta": 0.1,
            "train.seed": 0,
            "data.objectives.0": "helpful",
            "data.objectives.1": "harmless",
        },
    )
    (scalars,), kwargs = fake_mlflow.calls[2][1:]
    assert kwargs == {"step": 5}
    expected = {k: v for k, v in flatten(step_metrics(5, loss=0.25)).items() if k != "step"}
    assert scalars == expected


def test_mlflow_tracking_uri(tmp_path, fake_mlflow):
    cfg = logging_cfg(mlflow=True, mlflow_tracking_uri="file:///tmp/somewhere")
    MetricsLogger(tmp_path, cfg, PARAMS, console=lambda _: None).close()
    assert fake_mlflow.calls[0] == ("set_tracking_uri", ("file:///tmp/somewhere",), {})
    assert [name for name, _, _ in fake_mlflow.calls[1:]] == ["start_run", "log_params", "end_run"]


def test_mlflow_disabled_calls_nothing(tmp_path, fake_mlflow):
    logger = MetricsLogger(tmp_path, logging_cfg(mlflow=False), PARAMS, console=lambda _: None)
    logger.log(step_metrics(1))
    logger.close()
    assert fake_mlflow.calls == []


def test_mlflow_enabled_but_not_installed_is_skipped(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "mlflow", raising=False)
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    logger = MetricsLogger(tmp_path, logging_cfg(mlflow=True), PARAMS, console=lambda _: None)
    logger.log(step_metrics(1))
    logger.close()
    assert logger.mlflow is None
    assert len(read_metrics(tmp_path)) == 1
