"""What `moa serve SOURCE` serves, and the Serve config it deploys, checked without Ray running."""

import pytest
import yaml
from ray.serve._private.deploy_utils import get_app_code_version
from ray.serve.schema import ServeDeploySchema

from orchestrator.config import load_config
from orchestrator.distributed.serve import DEPLOYMENT
from orchestrator.errors import MoaError
from orchestrator.model.adapter_io import save_adapter
from orchestrator.model.loading import load_model
from orchestrator.model.svd_lora import inject_svd_lora
from orchestrator.recipes.serve import served_model


@pytest.fixture(scope="module")
def adapters(tiny_base_dir, perturb, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    saved = []
    for name, seed in (("final", 1), ("best", 2)):
        model = inject_svd_lora(
            load_model(str(tiny_base_dir)), 2, 4, 32, objective_names=("helpful", "harmless")
        )
        perturb(model, seed=seed)
        saved.append(save_adapter(model, root / name))
    return saved


@pytest.fixture
def run_dir(tmp_path, adapters, tiny_base_dir):
    """A run folder: config.yaml, adapter/ and best/adapter."""
    cfg = load_config(None, [f"model.name_or_path={tiny_base_dir}", "serve.port=9001"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump()))
    (tmp_path / "adapter").symlink_to(adapters[0])
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "adapter").symlink_to(adapters[1])
    return tmp_path


def test_a_run_folder_serves_its_best_adapter_unless_told_final(run_dir):
    served = served_model(str(run_dir))
    assert served.adapter == run_dir / "best" / "adapter"
    assert served.objectives == ["helpful", "harmless"] and served.settings.port == 9001
    final = served_model(str(run_dir), ["serve.checkpoint=final", "serve.port=9002"])
    assert final.adapter == run_dir / "adapter" and final.settings.port == 9002


def test_a_run_folder_without_best_serves_its_adapter(run_dir):
    (run_dir / "best" / "adapter").unlink()
    assert served_model(str(run_dir)).adapter == run_dir / "adapter"


def test_an_adapter_folder_takes_its_base_model_and_objectives_from_its_config(
    adapters, tiny_base_dir
):
    served = served_model(str(adapters[0]), ["serve.model_name=steer"])
    assert served.base_model == str(tiny_base_dir)
    assert served.objectives == ["helpful", "harmless"]
    assert served.settings.model_name == "steer"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["train.beta=0.2"], "only serve.* and model.*"),
        (["serve.max_batch_size=256"], "max_ongoing_requests (128) must be at least"),
        (["serve.default_preference=[0.9,0.3]"], "serve.default_preference"),
        (["serve.min_replicas=3", "serve.max_replicas=2"], "min_replicas (3) exceeds"),
        (["serve.model_name=moa:1"], "model_name"),
        (["serve.colour=blue"], "unknown field 'serve.colour'"),
    ],
)
def test_bad_settings_fail_before_anything_is_deployed(adapters, overrides, words):
    with pytest.raises(MoaError) as caught:
        served_model(str(adapters[0]), overrides)
    assert words in str(caught.value)


def test_a_folder_that_is_neither_a_run_nor_an_adapter_is_refused(tmp_path):
    with pytest.raises(MoaError, match="neither a run folder"):
        served_model(str(tmp_path))


def test_objectives_that_disagree_with_the_adapter_are_refused(run_dir):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["data"]["objectives"] = ["harmless", "helpful"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(MoaError, match="has objectives"):
        served_model(str(run_dir))


def test_the_serve_config_reloads_in_place_when_only_the_adapter_or_batching_changes(adapters):
    first = served_model(str(adapters[0])).application()
    second = served_model(
        str(adapters[1]), ["serve.max_batch_size=8", "serve.batching=static"]
    ).application()
    apps = [
        ServeDeploySchema.model_validate({"applications": [a]}).applications[0]
        for a in (first, second)
    ]
    assert get_app_code_version(apps[0]) == get_app_code_version(apps[1])  # no restart
    [deployment] = second["deployments"]
    assert deployment["name"] == DEPLOYMENT
    assert deployment["user_config"] == {
        "adapter": str(adapters[1].resolve()),
        "max_batch_size": 8,
        "batching": "static",
        "max_waiting_requests": 64,
        "queue_timeout_s": 60.0,
        "body_timeout_s": 10.0,
    }
    assert deployment["num_replicas"] == 1
    elsewhere = served_model(str(adapters[0]), ["serve.max_tokens=512"]).application()
    restarted = ServeDeploySchema.model_validate({"applications": [elsewhere]}).applications[0]
    assert get_app_code_version(restarted) != get_app_code_version(apps[0])


def test_replicas_and_resources_come_from_the_settings(adapters):
    app = served_model(
        str(adapters[0]),
        [
            "serve.min_replicas=1",
            "serve.max_replicas=4",
            "serve.target_ongoing_requests=8",
            "serve.num_gpus=1",
            "serve.num_cpus=4",
        ],
    ).application()
    [deployment] = app["deployments"]
    assert deployment["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 8.0,
    }
    assert "num_replicas" not in deployment
    assert deployment["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 1.0}
    assert app["args"]["device"] == "cuda" and app["args"]["threads"] == 4
