"""SIPO as a Ray job: `python jobs/sipo.py CONFIG [key=value ...]` (or `--resume RUN_DIR`).

`ray job submit` sets RAY_ADDRESS for the job's driver, so the generation pool and the
re-alignment's Ray Train workers run on that cluster; run directly, it starts a local Ray
instance. The same as `moa sipo CONFIG [key=value ...]`.
"""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["sipo", *sys.argv[1:]]))
