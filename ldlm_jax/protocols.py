"""The contracts of the four seams a new part plugs into, as `typing.Protocol`s.

  LatentSpace       latent_spaces.REGISTRY        (config.latent_space.name)
  DiffusionProcess  diffusion.processes.PROCESSES (config.diffusion.process); a 'vp' one is a VPProcess
  TimeSampler       diffusion.time_samplers.SAMPLERS (config.timesteps.sampler)
  ConditionPath     models.dit.CONDITION_PATHS    (config.condition.path)

A part is registered by one line in its registry; tests/test_protocols.py checks every
entry of every registry with `violations()` below: each member of the protocol exists,
and each method takes the protocol's parameters (the same number and kinds; a
parameter with a default keeps its name and has a default, since callers pass it by
keyword). `isinstance` on these runtime-checkable protocols checks only that the
members exist.

Shapes follow the names: B batch, L tokens, N latents, D latent width, H feature width.
This module imports nothing from the project, so any layer may use it for annotations.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class LatentSpace(Protocol):
  """What the diffusion model diffuses (latent_spaces/base.py has the shared implementation).

  Constructed as `cls(config, encoder, model)` by `LDLM`, which owns the denoiser and the
  token decoder; the latent space owns encode / decode and its reconstruction terms.
  """
  name: str                      # its registry key
  required_input: str | None     # 'hidden' | 'embeddings' | 'scratch'; None = config.encoder.input
  trains_diffusion: bool         # False: an autoencoder stage without the diffusion loss
  extra_metrics: tuple[str, ...]  # its own loss terms, logged

  def __init__(self, config, encoder, model) -> None: ...

  @property
  def components(self) -> tuple[str, ...]:
    """Components it owns (trainable or frozen), the denoiser excluded."""

  @property
  def frozen_components(self) -> tuple[str, ...]:
    """Components that must arrive frozen from another run (train.init_from)."""

  @classmethod
  def check_config(cls, config) -> None:
    """ConfigError, naming the fix, for settings it cannot use."""

  def dims(self) -> Any:
    """latent_spaces.Dims: seq_len, latent_len, latent_dim, feature_dim, vocab_size."""

  def init(self, keys: dict) -> dict:
    """{component: params} from {component: init key}."""

  def frozen_inputs(self, encoder_params, norm_mean, norm_std, components=None) -> Any:
    """latent_spaces.FrozenInputs: what the loss needs that is not trained."""

  def features(self, frozen, params, tokens_BL) -> Any:
    """h_n (B, L, H): normalized frozen features (or trainable scratch embeddings)."""

  def encode(self, params, h_n_BLH, rng=None) -> Any:
    """z (B, N, D), the clean latents; `rng` only in training (None = deterministic)."""

  def decode(self, params, z_BND) -> Any:
    """What the shared token decoder reads, (B, L, feature_dim)."""

  def reconstruction(self, params, h_n_BLH, z_BND, tokens_BL, rng) -> dict:
    """{'reconstruction_loss', 'ce_loss', 'token_accuracy'} (+ 'extra_loss' and its metrics)."""

  def condition_dim(self) -> int:
    """Width of condition_features()."""

  def condition_features(self, frozen, params, tokens_BL, mask_BL) -> Any:
    """(B, L, H) features of the given tokens only, zero elsewhere."""


@runtime_checkable
class DiffusionProcess(Protocol):
  """Forward corruption, training target and x0 conversion (diffusion/processes/__init__.py)."""
  name: str   # its registry key
  kind: str   # 'vp' | 'flow' (processes.KINDS): which solvers integrate it

  @classmethod
  def from_config(cls, config) -> DiffusionProcess: ...

  def alpha(self, t) -> Any:
    """Signal scale at t."""

  def sigma(self, t) -> Any:
    """Noise scale at t."""

  def corrupt(self, z0_BND, t_B, noise_BND) -> Any:
    """z_t (B, N, D); t = 1 is noise."""

  def target(self, z0_BND, noise_BND, t_B) -> Any:
    """What the network is trained to output."""

  def to_x0(self, z_t_BND, t_B, net_out_BND) -> Any:
    """The clean-latent estimate x0_hat from the network output."""

  def per_example_loss(self, net_out_BND, target_BND) -> Any:
    """(B,) mean squared error per example."""

  def sampling_t_end(self, t_min: float) -> float:
    """The last time of the sampling grid."""


@runtime_checkable
class VPProcess(DiffusionProcess, Protocol):
  """A 'vp' process: the VP solvers (Euler-Maruyama, DDIM) also read its beta(t)."""

  def beta(self, t) -> Any:
    """The VP SDE's beta at t."""


@runtime_checkable
class TimeSampler(Protocol):
  """Training-time sampler: f(state, rng, batch_size, tc) -> (t_B in [0, 1), bins_B)
  (tc = config.timesteps; bins index the adaptive sampler's state, whichever sampler drew t)."""

  def __call__(self, state, rng, batch_size: int, tc) -> tuple[Any, Any]: ...


@runtime_checkable
class ConditionPath(Protocol):
  """How the denoiser reads the condition tokens (models/dit.py).

  `cond_x_BMW` are the projected condition features, `cond_mask_BM` marks the given
  positions. `join` returns the denoiser's sequence and its key mask (None = every key):
  'in_context' appends the condition tokens (dropped from the output), 'cross_attention'
  leaves the sequence alone and each block attends to them (`cross_attention = True`).
  """
  name: str               # its registry key
  cross_attention: bool   # the blocks get the condition tokens for cross-attention

  def join(self, x_BNW, cond_x_BMW, cond_mask_BM) -> tuple[Any, Any]: ...


def _members(protocol: type) -> dict[str, Any]:
  """{name: None for a data attribute, else the declared function} over the protocol and its bases."""
  members = {}
  for klass in reversed(protocol.__mro__):
    if not getattr(klass, '_is_protocol', False) or klass is Protocol:
      continue
    for name in vars(klass).get('__annotations__', {}):
      members[name] = None
    for name, value in vars(klass).items():
      if name.startswith('_') and name not in ('__init__', '__call__'):
        continue
      function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
      function = function.fget if isinstance(function, property) else function
      if getattr(function, '__qualname__', '').split('.')[0] != klass.__name__:
        continue   # typing's own __init__ and helpers, not declared by the protocol
      if isinstance(value, (classmethod, staticmethod, property)) or inspect.isfunction(value):
        members[name] = value
  return members


def _parameters(function) -> list[inspect.Parameter]:
  """Parameters after self/cls."""
  params = list(inspect.signature(function).parameters.values())
  if params and params[0].name in ('self', 'cls'):
    params = params[1:]
  return params


def _signature_problem(expected, actual) -> str | None:
  want, got = _parameters(expected), _parameters(actual)
  if len(want) != len(got) or any(w.kind != g.kind for w, g in zip(want, got)):
    return f'takes ({", ".join(map(str, got))}); the contract is ({", ".join(map(str, want))})'
  for w, g in zip(want, got):
    if w.default is not inspect.Parameter.empty and (g.name != w.name or g.default is inspect.Parameter.empty):
      return f'must take {w} with a default (callers pass it by keyword); it takes {g}'
  return None


def violations(part: Any, protocol: type) -> list[str]:
  """One sentence per way `part` (a class, an instance or a function) breaks `protocol`."""
  out = []
  for name, declared in _members(protocol).items():
    if name == '__call__' and (inspect.isfunction(part) or inspect.ismethod(part)):
      actual = part
    elif not hasattr(part, name):
      out.append(f'has no {name!r}')
      continue
    else:
      actual = getattr(part, name)
    if declared is None or isinstance(declared, property):
      continue
    if not callable(actual):
      out.append(f'{name!r} is not callable')
      continue
    if isinstance(declared, classmethod) and isinstance(part, type) and not inspect.ismethod(actual):
      out.append(f'{name!r} must be a classmethod')
      continue
    expected = declared.__func__ if isinstance(declared, (classmethod, staticmethod)) else declared
    problem = _signature_problem(expected, actual)
    if problem:
      out.append(f'{name!r} {problem}')
  return out
