#!/usr/bin/env bash
# The README's test commands: install everything on a fresh machine, lint, check the
# import layers, then run the tests on CPU.
#   bash scripts/test.sh        the full suite (what CI runs)
#   bash scripts/test.sh fast   the fast tier: every test not marked slow (under 3 minutes
#                               on 2 cores); for everyday work
# Extra arguments go to pytest (after `fast`, if given).
set -uo pipefail
cd "$(dirname "$0")/.."
TIER=full
if [ "${1:-}" = fast ]; then
  TIER=fast
  shift
fi
bash scripts/setup_env.sh || { echo "setup failed"; exit 1; }
. .venv/bin/activate
. scripts/cpu_malloc.sh
# Lint (ruff.toml) and the import layers (scripts/check_imports.py) fail the run first.
ruff check . || { echo "ERROR: ruff check found problems (see above)."; exit 1; }
python scripts/check_imports.py || { echo "ERROR: the import layers are broken (see above)."; exit 1; }
MARK=()
if [ "$TIER" = fast ]; then
  MARK=(-m "not slow")
fi
# One pytest worker per core (each test uses about one; files stay whole so
# their fixtures are built once); the slowest tests are listed at the end.
python -m pytest -q -n "${LDLM_TEST_WORKERS:-auto}" --dist loadfile --durations=25 "${MARK[@]}" tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "ERROR: pytest collected no tests (exit code 5); treating as failure."
  exit 1
fi
exit "$rc"
