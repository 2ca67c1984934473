r"""Trains LDLM.

  python -m ldlm_jax.train --config configs/demo.py --workdir runs/demo \
      [--config.train.num_steps=2000 ...]

Running the same command again resumes from the latest checkpoint in
--workdir (train state, data iterator and timestep sampler included).

Multi-host: under SLURM (or with JAX_COORDINATOR_ADDRESS, MEGASCALE_*,
TPU_WORKER_HOSTNAMES, OpenMPI) `jax.distributed` is initialized from the
environment; on a Cloud TPU pod slice pass --distributed (launch/tpu_pod.py
does); pass --coordinator_address, --num_processes and --process_id to start
processes by hand (CPU included).
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from ldlm_jax import cli
from ldlm_jax.errors import ConfigError

# jax and the trainer are imported inside main(): after the flags are parsed and XLA_FLAGS and
# jax.distributed are set up (ruff.toml exempts the entry points from PLC0415).

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory (checkpoints, logs, samples).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for hand-started multi-process runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process id (with --coordinator_address).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False,
    'Call jax.distributed.initialize() with auto-detection (Cloud TPU pod slices, where no '
    'environment variable announces the cluster; launch/tpu_pod.py passes it).')
flags.mark_flags_as_required(['config', 'workdir'])

# Environment markers of launchers that jax.distributed.initialize() understands.
_CLUSTER_ENV = ('SLURM_NTASKS', 'TPU_WORKER_HOSTNAMES', 'MEGASCALE_COORDINATOR_ADDRESS',
                'JAX_COORDINATOR_ADDRESS', 'OMPI_COMM_WORLD_SIZE')


def init_distributed(coordinator=None, num_processes=None, process_id=None, force=False) -> None:
  """jax.distributed.initialize for multi-process runs; a no-op for one process."""
  import jax
  if coordinator:
    if num_processes is None or process_id is None:
      raise app.UsageError('--coordinator_address needs --num_processes and --process_id.')
    if jax.config.jax_platforms in (None, '', 'cpu') or os.environ.get('JAX_PLATFORMS') == 'cpu':
      # Cross-process collectives on CPU go through gloo.
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return
  multi = any(int(os.environ.get(k, '1') or 1) > 1 if k in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')
              else bool(os.environ.get(k)) for k in _CLUSTER_ENV)
  if multi or force:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if '://' in _WORKDIR.value:
    raise ConfigError(
        f'--workdir {_WORKDIR.value} is a URL, but the work directory is written with local '
        'file I/O; mount the bucket on every host (e.g. gcsfuse) or use a shared filesystem '
        'and pass that path.')
  workdir = cli.check_output_dir(_WORKDIR.value, '--workdir')
  from ldlm_jax import xla_flags
  added = xla_flags.add_gpu_flags()       # before jax starts a backend (it reads XLA_FLAGS once)
  fraction = xla_flags.set_gpu_memory_fraction()
  if fraction:
    added.append(f'{xla_flags.MEM_FRACTION_VAR}={fraction}')
  if added:
    print(f'XLA GPU flags added (set {xla_flags.OPT_OUT}=0 to skip): {" ".join(added)}')
  init_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _DISTRIBUTED.value)
  import jax
  from ldlm_jax.training import loop, refusal
  # A run refused during setup leaves the work directory as it found it (training/refusal.py).
  with refusal.undone_if_refused(workdir, cli.USER_ERRORS, enabled=jax.process_index() == 0):
    loop.train(_CONFIG.value, workdir)


if __name__ == '__main__':
  from ldlm_jax.training.loop import NonFiniteLossError
  cli.run_absl(main, extra_errors=(NonFiniteLossError,))
