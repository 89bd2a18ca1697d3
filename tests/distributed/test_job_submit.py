"""`ray job submit` to the session's head (cluster/start-local.sh), with token auth on."""

import json
import os
import re
import secrets
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("credentials", ["missing", "wrong"])
def test_submit_without_valid_token_is_refused(ray_head, credentials):
    env = {k: v for k, v in ray_head.env.items() if not k.startswith("RAY_AUTH")}
    if credentials == "wrong":
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    submission_id = f"refused-{credentials}-{secrets.token_hex(4)}"
    res = ray_head.submit("python", "-c", "print(1)", submission_id=submission_id, env=env)
    output = res.stdout + res.stderr
    assert res.returncode != 0, output
    assert "Unauthorized" in output or "Authentication" in output, output
    listing = ray_head.ray("job", "list", "--address", ray_head.address, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert submission_id not in listing.stdout


# Through `sh -c` after list2cmdline quoting: keep it free of double quotes and `$`. What the job
# sees, then `moa train` on the tiny config, as `python -m orchestrator.cli train ...` runs it.
PROBE = """
import json, os, sys, ray
import orchestrator
ray.init()
print('PROBE', json.dumps({
    'orchestrator': orchestrator.__file__,
    'moa_cache_dir': os.environ.get('MOA_CACHE_DIR'),
    'cpus': ray.cluster_resources().get('CPU'),
}), flush=True)
from orchestrator.cli import main
sys.exit(main(['train', 'jobs/panacea_tiny.yaml', *sys.argv[1:]]))
"""


def test_a_job_runs_the_submitted_source_with_the_head_env_and_writes_a_run(
    ray_head, tiny_base_dir, tmp_path
):
    run_dir = tmp_path / "run"
    submission_id = f"panacea-{secrets.token_hex(4)}"
    res = ray_head.submit(
        "python", "-c", PROBE,
        f"model.name_or_path={tiny_base_dir}", "data.num_pairs=64", "train.max_steps=2",
        "train.warmup_steps=0", "train.batch_size=8", "eval.enabled=false",
        f"output_dir={run_dir}",
        submission_id=submission_id,
    )  # fmt: skip
    output = res.stdout + res.stderr
    assert res.returncode == 0, output
    assert ray_head.status(submission_id) == "SUCCEEDED"
    line = next(x for x in output.splitlines() if x.startswith("PROBE "))
    probe = json.loads(line.removeprefix("PROBE "))
    # The uploaded working dir comes first on the job's PYTHONPATH, ahead of the installed package.
    assert "_ray_pkg_" in probe["orchestrator"], probe
    assert probe["moa_cache_dir"] == ray_head.cache_dir, probe
    assert probe["cpus"] == 4
    named = re.findall(r"run folder (\S+)", output)
    assert named and Path(named[-1]) == run_dir, output[-3000:]
    # Checkpoints hold adapter/ folders too: look at the run folder's own.
    assert (run_dir / "adapter" / "adapter_config.json").is_file(), sorted(os.listdir(run_dir))
    assert (run_dir / "metrics.jsonl").is_file(), sorted(os.listdir(run_dir))
