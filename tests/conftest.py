"""Fixtures shared by several test folders."""

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import psutil
import pytest
import torch


def pytest_configure(config):
    """Token authentication for every Ray client of the session, with a token of its own (never
    ~/.ray/auth_token). Set before anything imports ray, which reads its auth mode once."""
    token_dir = Path(tempfile.mkdtemp(prefix="moa-ray-auth-"))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_dir / "auth_token"))


def pytest_unconfigure(config):
    shutil.rmtree(Path(os.environ["RAY_AUTH_TOKEN_PATH"]).parent, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """Tests never write to ~/.cache and never report Ray usage."""
    os.environ["MOA_CACHE_DIR"] = str(tmp_path_factory.mktemp("moa-cache"))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


PACKAGE_DIR = str(Path(__file__).resolve().parents[1] / "orchestrator")


@pytest.fixture(scope="session", autouse=True)
def _deprecations_met_by_project_code_fail():
    """A DeprecationWarning or FutureWarning raised by what orchestrator's code calls is an error.
    pytest's filterwarnings (pyproject.toml) matches only the module a warning names, and a
    library's warning often names its own frame: transformers' deprecated `forward` arguments
    name torch's Module.__call__. One the code silences by its message (a library's own use of
    another's deprecated call) is not."""
    original = warnings.warn

    def warn(message, category=None, stacklevel=1, source=None):
        kind = type(message) if isinstance(message, Warning) else category or UserWarning
        deprecation = issubclass(kind, DeprecationWarning | FutureWarning)
        if deprecation and _project_on_stack() and not _silenced(str(message), kind):
            raise message if isinstance(message, Warning) else kind(message)
        original(message, category, stacklevel + 1, source)

    warnings.warn = warn
    yield
    warnings.warn = original


# A deprecated call of ours reaches the warning through a few frames (decorators, Module.__call__);
# a warning deeper inside a library (one library's import of another) is that library's business.
CALLER_DEPTH = 6


def _silenced(text: str, kind: type) -> bool:
    """An "ignore" filter that names this warning by its message is in force."""
    return any(
        action == "ignore" and message is not None and message.match(text) and issubclass(kind, c)
        for action, message, c, _, _ in warnings.filters
    )


def _project_on_stack() -> bool:
    frame = sys._getframe(2)
    for _ in range(CALLER_DEPTH):
        if frame is None:
            return False
        if frame.f_code.co_filename.startswith(PACKAGE_DIR):
            return True
        frame = frame.f_back
    return False


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """A tiny Llama base model + BPE tokenizer built by build_tiny_base (hidden 32, 2 layers).

    Built once per session with a 5-step SFT warm-up; single-threaded, since tiny models on a busy
    machine are much faster that way than with several threads competing.
    """
    from orchestrator.model.tiny import TinyBaseConfig, build_tiny_base

    config = TinyBaseConfig(
        vocab_size=300,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        sft_examples=200,
        sft_steps=5,
        batch_size=8,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("tiny-base") / "model"
        return build_tiny_base(out, config, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_config(tiny_base_dir):
    """tiny_config(output_dir, *overrides): a run of a few steps on the session's tiny model and
    a small built-in task, without TensorBoard or MLflow; later overrides win."""
    from orchestrator.config import load_config

    def make(output_dir, *overrides):
        return load_config(
            None,
            [
                f"model.name_or_path={tiny_base_dir}",
                "data.num_pairs=48",
                "adapter.rank=4",
                "train.batch_size=4",
                "train.max_steps=2",
                "train.warmup_steps=0",
                "train.learning_rate=1e-2",
                "logging.tensorboard=false",
                "logging.mlflow=false",
                f"output_dir={output_dir}",
                *overrides,
            ],
        )

    return make


@pytest.fixture(scope="session")
def tokenizer(tiny_base_dir):
    from orchestrator.model.loading import load_tokenizer

    return load_tokenizer(str(tiny_base_dir))


@pytest.fixture(scope="session")
def encoded(tokenizer):
    """64 encoded helpful/harmless pairs of the built-in task."""
    from orchestrator.data.assistant_task import AssistantTask
    from orchestrator.data.encoding import encode_pairs

    pairs = AssistantTask(seed=0).preference_pairs(64, ("helpful", "harmless"))
    return encode_pairs(tokenizer, pairs, max_prompt_tokens=32, max_response_tokens=48)


@pytest.fixture(scope="session")
def train_here():
    """A stand-in for distributed.train.train that runs the same training in this process, on one
    rank (training/loop.py, the loop each Ray Train worker runs: `rank_loop`, train_rank by
    default); returns its seconds."""
    from orchestrator.training.loop import train_rank

    def train(
        cfg, run_dir, pairs, progress=True, margins=None, reference=None, callbacks=None,
        rank_loop=None, command=None,
    ):  # fmt: skip
        start = time.perf_counter()
        if rank_loop is None:
            train_rank(cfg, run_dir, pairs, margins=margins, reference=reference)
        else:
            rank_loop(cfg, run_dir, pairs)
        return time.perf_counter() - start

    return train


@pytest.fixture(scope="module")
def train_in_process(train_here):
    """Recipes train their models in this process (train_here) for the tests of a module whose
    subject is the recipe rather than Ray Train: which models it trains or reuses, its run
    folders, its report. Ray Train itself, and a recipe's tensors through it, are tested in
    tests/distributed/test_train.py and by the SPO, SIPO, sweep and demo tests."""
    from orchestrator.recipes import run_folder

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_folder, "train", train_here)
        yield


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run much faster on one thread, above all when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb_adapter(
    model: torch.nn.Module, seed: int = 1, std: float = 0.3, scale: float | None = None
) -> None:
    """Give every adapter tensor random non-zero values: U, Vᵀ ~ N(0, std²), σ ~ N(0, 1), and
    the λ scale s `scale` (default: uniform in [1, 2))."""
    from orchestrator.model.svd_lora import svd_lora_layers

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in svd_lora_layers(model):
            for param in (layer.lora_u, layer.lora_v):
                param.copy_(torch.randn(param.shape, generator=generator) * std)
            layer.lora_sigma.copy_(torch.randn(layer.lora_sigma.shape, generator=generator))
            if scale is None:
                layer.lora_scale.copy_(1.0 + torch.rand(1, generator=generator))
            else:
                layer.lora_scale.fill_(scale)


@pytest.fixture(scope="session")
def perturb():
    """perturb(model, seed=1, std=0.3, scale=None): random non-zero values for the adapter."""
    return perturb_adapter


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 180
SUBMIT_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _head_processes(sid: int, marker: str) -> list[psutil.Process]:
    """The head's processes: its session, plus job drivers (Ray gives each its own session)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid or proc.environ().get("MOA_TEST_RAY_HEAD") == marker:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _stop_head(sid: int, marker: str) -> None:
    # Not `ray stop`: it kills every Ray process of this user on the machine, including this
    # test session's own ray.init() cluster and anyone else's.
    procs = [p for p in _head_processes(sid, marker) if p.pid != os.getpid()]
    for sig, wait_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, procs = psutil.wait_procs(procs, timeout=wait_s)
        if not procs:
            return


AGENT_WAIT_S = 60.0
NO_AGENT = "No available agent to submit job"


class LocalHead:
    def __init__(
        self, port: int, dashboard_port: int, token_path: Path, env: dict[str, str], cache_dir: str
    ):
        self.gcs_address = f"127.0.0.1:{port}"
        self.address = f"http://127.0.0.1:{dashboard_port}"
        self.token_path = token_path
        self.env = env  # for clients holding the token
        self.cache_dir = cache_dir  # MOA_CACHE_DIR of the head, hence of its jobs

    def ray(self, *args: str, env=None, timeout=SUBMIT_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RAY, *args],
            cwd=REPO,
            env=self.env if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, *entrypoint: str, submission_id: str, env=None):
        """`ray job submit`, tried again (for up to AGENT_WAIT_S) while the head's job agent is
        not up yet: the job list answers before the agent can take a submission."""
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            result = self.ray(
                "job", "submit", "--address", self.address, "--submission-id", submission_id,
                "--working-dir", str(REPO), "--runtime-env", "cluster/runtime_env.yaml",
                "--", *entrypoint,
                env=env,
            )  # fmt: skip
            if NO_AGENT not in result.stdout + result.stderr or time.monotonic() > deadline:
                return result
            time.sleep(2)

    def status(self, submission_id: str) -> str:
        """The job's status from the REST API; the CLI prints only a sentence."""
        return _get_json(f"{self.address}/api/jobs/{submission_id}", self.token)["status"]

    @property
    def token(self) -> str:
        return self.token_path.read_text().strip()


def _get_json(url: str, token: str):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _wait_for_job_api(address: str, token: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _get_json(f"{address}/api/jobs/", token)
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """The test session's one Ray instance: a head started by cluster/start-local.sh with token
    authentication (4 CPUs, free ports, token in pytest's tmp dir), stopped even if tests fail."""
    token_path = Path(os.environ["RAY_AUTH_TOKEN_PATH"])  # start-local.sh creates the token
    # Short on purpose: Ray's unix sockets live under it and may not exceed 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="moa-ray-", dir="/tmp")
    marker = secrets.token_hex(8)
    dashboard_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.pop("RAY_API_SERVER_ADDRESS", None)
    env.setdefault("MOA_CACHE_DIR", str(tmp_path_factory.mktemp("moa-cache")))
    env.update(
        # The venv's `ray` for the script, and its `python` for the jobs' entrypoints.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_PORT=str(_free_port()),
        DASHBOARD_PORT=str(dashboard_port),
        NUM_CPUS="4",
        RAY_TEMP_DIR=temp_dir,
        # Ray Train's controller polls its workers every 2 s by default, so each run ends up to
        # two polls after its last step; the suite starts some thirty runs.
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.25",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        # Ray's state API (Ray Train's placement-group cleaner uses it in its actors) finds its
        # cluster by itself only while one Ray instance runs on the machine.
        RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dashboard_port}",
        MOA_TEST_RAY_HEAD=marker,
    )
    # Defaults 10001 and 52365 would clash with any other head on this machine.
    extra = [
        "--ray-client-server-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
    ]  # fmt: skip
    # Own session, so that teardown finds every process of this head and nothing else.
    proc = subprocess.Popen(
        [str(REPO / "cluster" / "start-local.sh"), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            out, _ = proc.communicate(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"start-local.sh took over {START_TIMEOUT_S} s:\n{out}")
        if proc.returncode != 0:
            pytest.fail(f"start-local.sh failed ({proc.returncode}):\n{out}")
        assert token_path.stat().st_mode & 0o777 == 0o600
        client_env = {
            k: v for k, v in env.items() if k not in ("MOA_TEST_RAY_HEAD", "RAY_TEMP_DIR")
        }
        client_env["RAY_AUTH_MODE"] = "token"
        head = LocalHead(
            int(env["RAY_PORT"]), dashboard_port, token_path, client_env, env["MOA_CACHE_DIR"]
        )
        _wait_for_job_api(head.address, head.token, timeout_s=60)
        yield head
    finally:
        _stop_head(proc.pid, marker)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session(ray_head):
    """This process as a driver of the session's Ray head, authenticated with its token."""
    import ray

    ray.init(address=ray_head.gcs_address, log_to_driver=False)
    yield ray_head
    ray.shutdown()


OBJECTIVES = ("helpful", "harmless")


@dataclasses.dataclass(frozen=True)
class RealPath:
    """A user's own data and reward models (README, "Your own data"): the built-in task's pairs
    in PKU-SafeRLHF's columns in a parquet file, and reward models `moa reward` trained on it."""

    data: Path
    reward_models: Path  # the run's reward_model/: one backbone, a head per objective
    reference_point: tuple[float, float] = (-10.0, -10.0)

    @property
    def scorers(self) -> dict[str, dict]:
        """Objective → its head of the reward models, as eval.scorers and sipo.reward_models
        name it."""
        return {o: {"model": str(self.reward_models), "head": o} for o in OBJECTIVES}

    @property
    def overrides(self) -> list[str]:
        """A run on the file, its fronts scored by the reward models."""
        return [
            "data.source=pku_saferlhf",
            f"data.path={self.data}",
            f"eval.scorers={json.dumps(self.scorers)}",
            f"eval.reference_point={list(self.reference_point)}",
        ]


def write_pku_file(path: Path) -> int:
    """The built-in task's pairs on all its prompts, without the ties PKU-SafeRLHF cannot hold,
    as a PKU-SafeRLHF parquet file; returns its rows."""
    import datasets

    from orchestrator.data.assistant_task import AssistantTask
    from orchestrator.data.pku_saferlhf import pku_saferlhf_rows
    from orchestrator.data.schema import SPLITS, PairDataset

    task = AssistantTask(seed=0)
    pairs = [
        pair
        for split, count in zip(SPLITS, (240, 40, 40), strict=True)
        for pair in task.preference_pairs(count, OBJECTIVES, split=split)
        if 0 not in pair.signs(OBJECTIVES)
    ]
    rows = pku_saferlhf_rows(PairDataset(OBJECTIVES, pairs))
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return len(rows)


@pytest.fixture(scope="session")
def real_path(tiny_base_dir, ray_session, tmp_path_factory, train_here):
    """The real path's data and reward models, written and trained once per session (`moa
    reward` from a YAML file as a user runs it, trained in this process: `moa reward` on Ray
    Train, stopped and resumed, is tests/recipes/test_reward.py's)."""
    import yaml

    from orchestrator.cli import main
    from orchestrator.recipes import reward

    root = tmp_path_factory.mktemp("real-path")
    data = root / "pku.parquet"
    assert write_pku_file(data) > 150
    config = {
        "model": {"name_or_path": str(tiny_base_dir)},
        "data": {"source": "pku_saferlhf", "path": str(data), "objectives": list(OBJECTIVES)},
        "train": {"max_steps": 8, "batch_size": 8, "learning_rate": 1e-3},
        "logging": {"tensorboard": False, "mlflow": False},
        "output_dir": str(root / "reward"),
    }
    (root / "reward.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reward, "train", train_here)
        assert main(["reward", str(root / "reward.yaml")]) == 0
    return RealPath(data, root / "reward" / "reward_model")
