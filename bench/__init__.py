"""The pyctr benchmark: pyctr side by side with runc, podman and the bare-syscall floor.

Run it with `./scripts/bench.sh` (set-up, then `python -m bench`); see bench/README.md.
"""
