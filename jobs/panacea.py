"""Panacea training as a Ray job: `python jobs/panacea.py CONFIG [key=value ...]`.

`ray job submit` sets RAY_ADDRESS for the job's driver, so training joins that cluster; run
directly, it starts a local Ray instance. The same as `moa train CONFIG [key=value ...]`.
"""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
