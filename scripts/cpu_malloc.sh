# Sourced by the scripts that run JAX on a CPU (scripts/demo.sh, scripts/test.sh): preloads
# tcmalloc where it is installed (Debian/Ubuntu package libtcmalloc-minimal4, which
# scripts/setup_env.sh installs when it runs as root).
#
# Why: XLA's CPU runtime allocates every step's temporary buffer afresh (about 140 MB for the
# demo's train step). glibc serves blocks that large with mmap and unmaps them on free, so the
# kernel maps and zeroes them again at every step (the demo took 58 million page faults and 262 s
# of system time). tcmalloc keeps the freed blocks. Nothing computed changes (the demo's
# evaluation is bit for bit the same); the demo's train step takes 15-22% less time
# (BUILD_NOTES.md, "Set-up with uv, and tcmalloc on CPU").
# LDLM_TCMALLOC=0 keeps glibc's allocator; a preload the caller set is left as it is.

# The path of libtcmalloc_minimal.so.4 the dynamic linker knows, or nothing (setup_env.sh asks too).
tcmalloc_library() { ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 /{print $NF; exit}' || true; }

if [ "${LDLM_TCMALLOC:-1}" != 0 ] && [ -z "${LD_PRELOAD:-}" ]; then
  _tcmalloc=$(tcmalloc_library)
  if [ -n "$_tcmalloc" ] && [ -f "$_tcmalloc" ]; then
    export LD_PRELOAD="$_tcmalloc"
    # tcmalloc reports single allocations over 1 GiB on stderr; a report is not an error here.
    export TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=${TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD:-1099511627776}
  fi
  unset _tcmalloc
fi
