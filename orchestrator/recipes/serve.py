"""`moa serve`: a run folder's adapter (its best, else adapter/) or an adapter folder, on Ray
Serve behind an OpenAI-compatible API with a preference λ per request (distributed/serve.py).
Everything is checked before anything is deployed."""

import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.config import parse_overrides, with_fields
from orchestrator.distributed.cluster import ensure_ray, started_here
from orchestrator.distributed.serve import ServedModel, deploy, undeploy
from orchestrator.errors import MoaError
from orchestrator.model.adapter_io import ADAPTER_CONFIG, adapter_version, read_adapter_config
from orchestrator.recipes.run_folder import CONFIG, chosen_adapter, open_run


def served_model(source: str, overrides: Sequence[str] = ()) -> ServedModel:
    """What `source` serves, with serve.* and model.* overrides."""
    bad = [o for o in overrides if not o.startswith(("serve.", "model."))]
    if bad:
        raise MoaError(f"moa serve takes only serve.* and model.* overrides; got {bad}")
    path = Path(source)
    if (path / CONFIG).is_file():
        cfg = open_run(path, list(overrides))
        adapter = chosen_adapter(path, best=cfg.serve.checkpoint == "best")
        saved = read_adapter_config(adapter)
    elif (path / ADAPTER_CONFIG).is_file():
        saved = read_adapter_config(path)
        adapter = path
        names = saved.objective_names or [f"objective_{i}" for i in range(saved.num_objectives)]
        defaults = {"data.objectives": list(names)}
        if saved.base_model is not None:
            defaults["model.name_or_path"] = saved.base_model
        cfg = with_fields({}, {**defaults, **parse_overrides(list(overrides))})
    else:
        raise MoaError(
            f"{source} is neither a run folder (with {CONFIG}) nor an adapter folder "
            f"(with {ADAPTER_CONFIG})"
        )
    default = cfg.serve.default_preference
    if saved.trained_at is not None and default is not None and default != list(saved.trained_at):
        raise MoaError(
            f"serve.default_preference: the adapter at {adapter} was trained at one preference, "
            f"{list(saved.trained_at)}, and is served at that one only"
        )
    objectives = list(cfg.data.objectives)
    if saved.objective_names is not None and list(saved.objective_names) != objectives:
        raise MoaError(
            f"the adapter at {adapter} has objectives {list(saved.objective_names)}, the run's "
            f"config {objectives}"
        )
    return ServedModel(
        cfg.model.name_or_path,
        cfg.model.dtype,
        objectives,
        adapter,
        adapter_version(adapter),
        cfg.serve,
    )


def start_serving(
    source: str, overrides: Sequence[str] = (), detach: bool = False
) -> tuple[ServedModel, str]:
    """(what is served, its base URL) once the app serves `source` on the connected cluster."""
    served = served_model(source, overrides)
    ensure_ray()
    if detach and started_here():
        raise MoaError(
            "--detach needs a Ray cluster that outlives this command (RAY_ADDRESS, or a head "
            "started with `ray start --head`); without one, leave --detach out"
        )
    return served, deploy(served)


def serve_until_interrupted(served: ServedModel) -> None:
    """Keep serving until Ctrl-C, then remove the app."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        undeploy(served.settings.app_name)
