"""The run folder: how every recipe starts, resumes and reuses the folder it writes into
(cfg.output_dir). config.yaml is written first; what a recipe reads of the config (its sections)
and writes into the folder (its outputs) is its RunKind.

  start_run     a new run (`moa train CONFIG`): a folder that holds a run is refused (a stopped
                one with the --resume command that continues it), or with --overwrite its
                recipe's outputs are removed first, so results never sit next to a config they
                did not come from
  open_run      a stopped run, resumed (`--resume RUN_DIR`) with the config it was started with
  claim_run     a run that continues when started again (a comparison, a sweep, each model they
                train): kept when its config.yaml agrees on the recipe's sections (a changed
                serve.port does not matter to training), else refused or, with overwrite, replaced;
                a folder without config.yaml is taken as it is
  train_into    one model trained into its folder: reused when done (train.json), continued from
                its last checkpoint when stopped
  load_trained  a finished run's config, tokenizer and model with its adapter
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from orchestrator.atomic import atomic_write_text
from orchestrator.config import TRAINING, RunConfig, load_config, with_fields
from orchestrator.data.schema import PairDataset
from orchestrator.distributed.train import train
from orchestrator.errors import MoaError
from orchestrator.model.adapter_io import ADAPTER_CONFIG, load_adapter
from orchestrator.model.loading import load_model, load_tokenizer

CONFIG = "config.yaml"
TRAINED = "train.json"  # written last by train_into: the model is done


@dataclass(frozen=True)
class RunKind:
    name: str  # what such a folder holds, in messages: "run", "comparison", "sweep"
    sections: tuple[str, ...]  # the config sections its results depend on
    outputs: tuple[str, ...]  # what it writes (glob patterns), removed when it is replaced
    ignored: tuple[str, ...] = ()  # dotted fields of those sections that are not compared
    command: str = ""  # the moa command that starts and resumes it (start_run's kinds)
    finished: str = TRAINED  # written last: a folder without it holds a stopped run


# A trained model's folder (metrics.jsonl, tensorboard/, checkpoints/, logs/, best/, adapter/,
# eval/, train.json); every recipe that trains writes these too.
TRAINING_RUN = RunKind(
    "run",
    TRAINING,
    (
        CONFIG,
        "metrics.jsonl",
        "tensorboard",
        "checkpoints",
        "logs",
        "best",
        "adapter",
        "eval",
        TRAINED,
    ),
    command="train",
)
# A model that continues from one its own run trained (an SPO stage, a SIPO round's
# re-alignment): adapter.init_from is a path inside that run's folder, spelled as the run was
# started or resumed and moved with it, so it is not compared; the run's own config fixes it.
CONTINUED_RUN = RunKind("run", TRAINING, TRAINING_RUN.outputs, ignored=("adapter.init_from",))


def start_run(cfg: RunConfig, kind: RunKind, overwrite: bool = False) -> Path:
    """cfg.output_dir for a new run of `kind`, with config.yaml written. Call it after every
    check, so that nothing is removed for a run that fails."""
    run_dir = Path(cfg.output_dir)
    if (run_dir / CONFIG).exists() and not overwrite:
        if (run_dir / kind.finished).exists():
            raise MoaError(
                f"output_dir {run_dir} already holds a finished {kind.name}; choose another "
                "output_dir or pass --overwrite to replace it"
            )
        raise MoaError(
            f"output_dir {run_dir} holds a stopped {kind.name}{_progress(run_dir)}; continue it "
            f"with `moa {kind.command} --resume {run_dir}`, or pass --overwrite to start again, "
            f"which deletes {', '.join(_present_outputs(run_dir, kind))}"
        )
    _clear(run_dir, kind)
    _write_config(run_dir, cfg)
    return run_dir


def open_run(run_dir: str | Path, overrides: list[str] = ()) -> RunConfig:
    """The config the run in `run_dir` was started with (its config.yaml, `overrides` applied),
    with output_dir `run_dir`: a moved folder resumes where it is."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise MoaError(f"{run_dir} is not a run folder: {CONFIG} is missing")
    return with_fields(load_config(run_dir / CONFIG, overrides), {"output_dir": str(run_dir)})


def claim_run(cfg: RunConfig, kind: RunKind, overwrite: bool = False) -> Path:
    """cfg.output_dir for a run of `kind` that continues when started again: a folder whose
    config.yaml agrees with `cfg` on the kind's sections is kept as it is; one that does not is
    refused, or with `overwrite` its outputs are removed first. config.yaml is (re)written."""
    run_dir = Path(cfg.output_dir)
    saved = run_dir / CONFIG
    if saved.is_file():
        try:
            before = _compared(load_config(saved), kind)
        except MoaError as err:
            raise MoaError(f"{saved}: {err}") from None
        now = _compared(cfg, kind)
        differ = [name for name in kind.sections if before[name] != now[name]]
        if differ and not overwrite:
            raise MoaError(
                f"{run_dir} holds a {kind.name} with another config ({', '.join(differ)} "
                "differ); run it with that config to finish it, choose another output_dir, or "
                "pass --overwrite to replace it"
            )
        if differ:
            _clear(run_dir, kind)
    _write_config(run_dir, cfg)
    return run_dir


def train_into(
    cfg: RunConfig,
    pairs: PairDataset,
    *,
    kind: RunKind = TRAINING_RUN,
    margins: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    progress: bool = True,
    callbacks: list | None = None,
) -> tuple[Path, float]:
    """(adapter, training seconds) of the model `cfg` describes, trained on Ray Train into
    cfg.output_dir unless it is done there already (its folder claimed as `kind`). `margins`,
    `reference` and `callbacks` go to distributed.train.train."""
    run_dir = claim_run(cfg, kind)
    record = run_dir / TRAINED
    if not record.is_file():
        seconds = train(
            cfg,
            run_dir,
            pairs,
            progress=progress,
            margins=margins,
            reference=reference,
            callbacks=callbacks,
        )
        atomic_write_text(record, json.dumps({"train_seconds": seconds}))
    return run_dir / "adapter", json.loads(record.read_text())["train_seconds"]


def load_trained(
    run_dir: str | Path, overrides: list[str] = (), *, best: bool = False
) -> tuple[RunConfig, object, object]:
    """(config, tokenizer, model with the run's trained adapter: its best one when `best`, see
    chosen_adapter) of a finished run."""
    cfg = open_run(run_dir, overrides)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_model(cfg.model.name_or_path, cfg.model.dtype, cfg.model.device)
    load_adapter(model, chosen_adapter(Path(run_dir), best))
    return cfg, tokenizer, model


def chosen_adapter(run_dir: Path, best: bool) -> Path:
    """The run's best adapter (best/, kept when eval.every > 0) when `best` and it has one, else
    its final adapter/."""
    candidate = run_dir / "best" / "adapter"
    return candidate if best and (candidate / ADAPTER_CONFIG).is_file() else run_dir / "adapter"


def _compared(cfg: RunConfig, kind: RunKind) -> dict:
    """The config's sections as claim_run compares them: without the kind's ignored fields."""
    data = cfg.model_dump()
    for field in kind.ignored:
        section, name = field.split(".", 1)
        data[section].pop(name)
    return data


def _progress(run_dir: Path) -> str:
    """The newest checkpoint anywhere in the folder, for a message."""
    steps = [int(path.name.rsplit("_", 1)[1]) for path in run_dir.glob("**/checkpoint_[0-9]*")]
    return f" (last checkpoint at step {max(steps)})" if steps else ""


def _present_outputs(run_dir: Path, kind: RunKind) -> list[str]:
    names = {path.name for path in _outputs(run_dir, kind)}
    return sorted(names - {CONFIG}) or [CONFIG]


def _clear(run_dir: Path, kind: RunKind) -> None:
    for path in _outputs(run_dir, kind):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _outputs(run_dir: Path, kind: RunKind) -> list[Path]:
    """What of the kind's outputs the folder holds."""
    return [path for pattern in kind.outputs for path in run_dir.glob(pattern)]


def _write_config(run_dir: Path, cfg: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG, yaml.safe_dump(cfg.model_dump(), sort_keys=False))
