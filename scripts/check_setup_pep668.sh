#!/usr/bin/env bash
# Checks the README's first command on a PEP 668 ("externally managed") Python, as CI does:
# in a copy of the committed tree, `bash scripts/setup.sh` with such a Python must create the
# project's .venv, install the project there, and the README's next command (`kedro run`, here
# the smoke env) must work from it.
#   bash scripts/check_setup_pep668.sh [python]   # default: the first externally managed of
#                                                  # /usr/bin/python3, /usr/local/bin/python3
set -euo pipefail
cd "$(dirname "$0")/.."
marked() {
  [ -x "$1" ] && "$1" -c 'import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if os.path.exists(marker) and sys.prefix == sys.base_prefix else 1)' 2>/dev/null
}
py="${1:-}"
if [ -z "$py" ]; then
  for candidate in /usr/bin/python3 /usr/local/bin/python3; do
    if marked "$candidate"; then py=$candidate; break; fi
  done
fi
if [ -z "$py" ]; then
  echo "check_setup_pep668: skipped: no externally managed (PEP 668) Python on this machine"
  exit 0
fi
marked "$py" || { echo "check_setup_pep668: $py is not externally managed (PEP 668)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive HEAD | tar -x -C "$work"
cd "$work"
echo "check_setup_pep668: bash scripts/setup.sh with PYTHON=$py in a copy of HEAD ($work)"
PYTHON="$py" bash scripts/setup.sh > setup.log 2>&1 || { tail -n 30 setup.log; exit 1; }
grep -q "externally managed (PEP 668)" setup.log || { echo "no PEP 668 notice" >&2; exit 1; }
grep -q "source .venv/bin/activate" setup.log || { echo "no activation hint" >&2; exit 1; }
[ -x .venv/bin/kedro ] || { echo "check_setup_pep668: no .venv/bin/kedro" >&2; exit 1; }
# the README's second command, from the venv the first one made
# shellcheck disable=SC1091
source .venv/bin/activate
KEDRO_DISABLE_TELEMETRY=1 kedro run --env=smoke > run.log 2>&1 || { tail -n 30 run.log; exit 1; }
echo "check_setup_pep668: ok: setup.sh made .venv on $py and \`kedro run --env=smoke\` ran from it"
