"""A sweep as a Ray job: `python jobs/tune.py CONFIG [key=value ...]`, the same as
`moa tune CONFIG [key=value ...]`. Submitted again with the same config, it finishes a stopped
sweep."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
