#!/usr/bin/env bash
# Install (or reuse) the environment, then run the test suite and build the docs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
export XNOWCAST_TEST_DATA="${XNOWCAST_TEST_DATA:-$repo_root/../shared/data}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
# idle OpenMP threads must not spin: pytest runs subprocesses and dask workers side by side
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

ruff check xnowcast tests benchmarks examples

set +e
python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "ci/test.sh: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"

if [ -f docs/conf.py ] && [ "${XNOWCAST_SKIP_DOCS:-0}" != "1" ]; then
  python -m sphinx -W --keep-going -b html docs docs/_build/html -q
fi
echo "ci/test.sh: all checks passed"
