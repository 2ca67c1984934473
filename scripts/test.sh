#!/usr/bin/env bash
# The README's test command: installs everything on a fresh machine and runs
# the whole suite on CPU. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh || { echo "setup failed"; exit 1; }
. .venv/bin/activate
# One pytest worker per core (each test uses about one; files stay whole so
# their fixtures are built once); the slowest tests are listed at the end.
python -m pytest -q -n "${LDLM_TEST_WORKERS:-auto}" --dist loadfile --durations=25 tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "ERROR: pytest collected no tests (exit code 5); treating as failure."
  exit 1
fi
exit "$rc"
