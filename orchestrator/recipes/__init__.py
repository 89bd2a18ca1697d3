"""One module per command, read top to bottom: panacea (`moa train`), spo, sipo, baselines and
compare, sweep (`moa tune`), evaluate (`moa eval`), serve, demo; and the one run-folder protocol
every recipe follows (run_folder.py) with the checks before any worker starts (inputs.py)."""
