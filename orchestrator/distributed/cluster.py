"""The connection to Ray: the cluster RAY_ADDRESS names (set by `ray job submit`), else a local
instance, with token authentication on; and a config as Ray's processes must see it."""

import os
from pathlib import Path

import ray

from orchestrator.config import RunConfig, with_fields
from orchestrator.model.loading import resolve_model_path
from orchestrator.serving.stream_guard import PROXY_CALLBACK


def ensure_ray() -> None:
    """Connect unless connected. Workers' and actors' output stays out of this console (a run's
    training workers write theirs to RUN_DIR/logs; the rest is in Ray's session logs). A local
    instance gets the dashboard, on 127.0.0.1: Ray Train removes the worker group of a run whose
    controller was killed (a trial ASHA stops) only after asking the dashboard's State API that
    the controller is dead."""
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        address = os.environ.get("RAY_ADDRESS")
        if not address:  # the local instance's Serve proxies: a stream whose replica dies ends
            os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", PROXY_CALLBACK)
        local = {} if address else {"include_dashboard": True, "dashboard_host": "127.0.0.1"}
        ray.init(address=address, log_to_driver=False, **local)


def started_here() -> bool:
    """Whether this process started the Ray instance it is connected to (it ends with it)."""
    return ray._private.worker.global_worker.node.head


def for_workers(cfg: RunConfig) -> RunConfig:
    """The config with its local paths absolute: Ray's workers and actors do not run in the
    driver's working directory."""
    fields = {"model.name_or_path": resolve_model_path(cfg.model.name_or_path)}
    if cfg.adapter.init_from is not None:
        fields["adapter.init_from"] = str(Path(cfg.adapter.init_from).resolve())
    return with_fields(cfg, fields)
