"""Device mesh and shardings: a 'data' axis and an optional 'fsdp' axis.

The batch is split over both axes. With fsdp > 1 every parameter (and the
optimizer moments and EMA copy, which have the same shapes) is split along
its largest dimension that the fsdp axis divides; small or indivisible
arrays stay replicated. XLA inserts the all-gathers and reduce-scatters.
"""

from __future__ import annotations

import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ldlm_jax.errors import ConfigError

DATA_AXES = ('data', 'fsdp')
# Arrays smaller than this stay replicated: sharding them saves nothing.
MIN_SHARD_SIZE = 2 ** 14


def make_mesh(config, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  fsdp = int(config.mesh.fsdp)
  data = int(config.mesh.data)
  if fsdp < 1 or n % fsdp:
    raise ConfigError(f'mesh.fsdp={fsdp} must be >= 1 and divide the {n} devices.')
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise ConfigError(
        f'mesh.data x mesh.fsdp = {data} x {fsdp} does not cover the {n} devices; '
        'set mesh.data=-1 to use the rest.')
  return Mesh(np.asarray(devices).reshape(data, fsdp), DATA_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _leaf_spec(shape, fsdp: int) -> P:
  if fsdp <= 1 or not shape or int(np.prod(shape)) < MIN_SHARD_SIZE:
    return P()
  order = sorted(range(len(shape)), key=lambda i: -shape[i])
  for axis in order:
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = 'fsdp'
      return P(*spec)
  return P()


def state_shardings(mesh: Mesh, state_shapes):
  """NamedShardings for a pytree of arrays (or ShapeDtypeStructs)."""
  fsdp = mesh.shape['fsdp']
  return jax.tree.map(lambda x: NamedSharding(mesh, _leaf_spec(tuple(x.shape), fsdp)),
                      state_shapes)


def check_batch_size(global_batch: int, mesh: Mesh, process_count: int = 1):
  shards = mesh.shape['data'] * mesh.shape['fsdp']
  if global_batch % shards or global_batch % process_count:
    raise ConfigError(
        f'train.batch_size={global_batch} must be divisible by the {shards} data shards '
        f'and the {process_count} processes.')
