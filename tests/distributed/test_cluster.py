"""Where a driver's Ray comes from: the cluster RAY_ADDRESS names, else a local instance with its
dashboard on 127.0.0.1, which Ray Train needs to free the workers of a run Tune stops (shown on a
real instance in tests/recipes/test_sweep.py)."""

import pytest
import ray

from orchestrator.distributed.cluster import ensure_ray


@pytest.fixture
def inits(monkeypatch):
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    return calls


def test_a_local_instance_gets_the_dashboard_on_loopback(inits, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ensure_ray()
    assert inits == [
        {
            "address": None,
            "log_to_driver": False,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
        }
    ]


def test_a_cluster_is_joined_as_it_is(inits, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    ensure_ray()
    assert inits == [{"address": "http://127.0.0.1:8265", "log_to_driver": False}]


def test_a_connected_driver_is_left_alone(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("ray.init called again"))
    ensure_ray()
