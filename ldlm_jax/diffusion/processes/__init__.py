"""Diffusion processes, chosen by `config.diffusion.process` (docs/method.md Section 5;
docs/architecture.md, "Adding a part").

A process owns the forward corruption, the training target and the
conversion of the network output to an x0 estimate:

  corrupt(z0, t, noise)          -> z_t (B, N, D), t (B,) in [0, 1], t = 1 is noise
  target(z0, noise, t)           -> what the network is trained to output
  to_x0(z_t, t, net_out)         -> x0_hat, the clean-latent estimate
  per_example_loss(net_out, tgt) -> (B,) mean squared error per example
  sampling_t_end(t_min)          -> the last time of the sampling grid

and `kind`, the family a solver integrates ('vp': alpha, sigma and beta of a
variance-preserving SDE; 'flow': z_t = (1 - t) z0 + t noise). Everything
after the network speaks x0: self-conditioning carries x0_hat, the solvers
receive f(z_t, t, x0_sc) -> x0_hat, guidance mixes x0 estimates.

Adding a process: one new file in this package with a class like the two
below (a `from_config(config)` constructor) and one line in PROCESSES.
"""

from __future__ import annotations

from ldlm_jax.diffusion.processes.rectified_flow import RectifiedFlow
from ldlm_jax.diffusion.processes.vp_tangent import VPTangent

PROCESSES = {
    'vp_tangent': VPTangent,          # the paper (docs/method.md 5.1; the default)
    'rectified_flow': RectifiedFlow,  # TextLDM (docs/method.md 5.2; Liu et al. 2022)
}
KINDS = ('vp', 'flow')


def process_from_config(config):
  """The process object of `config.diffusion.process` (absent = 'vp_tangent', an old run)."""
  name = config.diffusion.get('process', 'vp_tangent')
  if name not in PROCESSES:
    raise ValueError(f'unknown diffusion process {name!r}; use one of {tuple(PROCESSES)}')
  return PROCESSES[name].from_config(config)
