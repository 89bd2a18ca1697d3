"""SPO as a Ray job: `python jobs/spo.py CONFIG [key=value ...]`, the same as
`moa spo CONFIG [key=value ...]`."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["spo", *sys.argv[1:]]))
