"""The method comparison as a Ray job: `python jobs/compare.py CONFIG [key=value ...]`, the same
as `moa compare CONFIG [key=value ...]`. Submitted again with the same config, it resumes."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
