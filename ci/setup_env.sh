# Sourced by ci/demo.sh and ci/test.sh: create or reuse .venv and install the
# project with torch pinned to 2.13.0 (the CPU wheel) and every other package
# pinned to known-good versions through ci/constraints.txt.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
if [ ! -x .venv/bin/python ]; then
  echo "xnowcast: creating .venv" >&2
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=".venv/.xnowcast-installed"
want="$(cat pyproject.toml ci/constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "xnowcast: installing (torch 2.13.0 first, then the project with constraints)" >&2
  python -m pip install -q --disable-pip-version-check "torch==2.13.0"
  python -m pip install -q --disable-pip-version-check -c ci/constraints.txt -e ".[dev,docs,train]"
  echo "$want" > "$stamp"
fi
