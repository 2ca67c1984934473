"""Every registered part meets the contract of its seam (ldlm_jax/protocols.py)."""

import pytest

from ldlm_jax import latent_spaces, protocols
from ldlm_jax.diffusion import processes, time_samplers
from ldlm_jax.models import dit


@pytest.mark.parametrize('name', sorted(latent_spaces.REGISTRY))
def test_latent_spaces(name):
  cls = latent_spaces.REGISTRY[name]
  assert protocols.violations(cls, protocols.LatentSpace) == []
  assert cls.name == name


@pytest.mark.parametrize('name', sorted(processes.PROCESSES))
def test_diffusion_processes(name):
  cls = processes.PROCESSES[name]
  assert cls.kind in processes.KINDS
  contract = protocols.VPProcess if cls.kind == 'vp' else protocols.DiffusionProcess
  assert protocols.violations(cls, contract) == []
  assert cls.name == name


@pytest.mark.parametrize('name', sorted(time_samplers.SAMPLERS))
def test_time_samplers(name):
  sampler = time_samplers.SAMPLERS[name]
  assert isinstance(sampler, protocols.TimeSampler)
  assert protocols.violations(sampler, protocols.TimeSampler) == []


@pytest.mark.parametrize('name', sorted(dit.CONDITION_PATHS))
def test_condition_paths(name):
  path = dit.CONDITION_PATHS[name]
  assert isinstance(path, protocols.ConditionPath)
  assert protocols.violations(path, protocols.ConditionPath) == []
  assert path.name == name


def test_a_part_that_breaks_its_contract_is_named():
  class HalfProcess:
    name, kind = 'half', 'flow'

    def corrupt(self, z0_BND, t_B):   # no noise argument
      return z0_BND

  found = protocols.violations(HalfProcess, protocols.DiffusionProcess)
  assert "has no 'to_x0'" in found
  assert any(line.startswith("'corrupt' takes (z0_BND, t_B); the contract is") for line in found)

  def sampler(state, rng, batch_size):   # no timesteps config
    return state, rng

  assert protocols.violations(sampler, protocols.TimeSampler) == [
      "'__call__' takes (state, rng, batch_size); the contract is (state, rng, batch_size: 'int', tc)"]

  class NoRng(latent_spaces.REGISTRY['ldlm']):
    def encode(self, params, h_n_BLH, key=None):   # callers pass rng= by keyword
      return h_n_BLH

  assert protocols.violations(NoRng, protocols.LatentSpace) == [
      "'encode' must take rng=None with a default (callers pass it by keyword); it takes key=None"]
