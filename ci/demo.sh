#!/usr/bin/env bash
# Install (or reuse) the environment, then run the main job: a nowcast and a
# downscale of the bundled real radar sample, written as NetCDF and PNG.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
python -m xnowcast.cli demo --out "${1:-demo-output}"
