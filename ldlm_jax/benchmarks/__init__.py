"""Speed, FLOPs and memory benchmarks of LDLM (the `python -m ldlm_jax.bench` CLI).

  encoders  the frozen encoder for a benchmark: real weights when they can be
            loaded, else random weights of the same architecture
  flops     analytic model FLOPs of a train step and of a sampling step
  timing    compile-then-time helpers and the measured matmul peak
  memory    compiled memory analysis and device peak memory
  runs      the train and sample benchmarks
  aot       ahead-of-time compile of the train step for an N-device mesh
"""
