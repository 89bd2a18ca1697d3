import subprocess
import sys

import orchestrator


def test_every_public_name_resolves():
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name) is not None, name
    assert orchestrator.hypervolume([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]], [0.0, 0.0]) == 6.0


def test_importing_the_task_does_not_import_torch():
    code = "import sys, orchestrator.data.assistant_task; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
