"""Latent spaces by name (`config.latent_space.name`; paper Table 2). See base.py.

Adding one: a new module with a `LatentSpace` subclass, one line here, a
variant in configs/latent_spaces.py and a test.
"""

from __future__ import annotations

from ldlm_jax.errors import ConfigError
from ldlm_jax.latent_spaces.autoencoder import CosmosAutoencoder, JointAutoencoder
from ldlm_jax.latent_spaces.base import COMPONENTS, Dims, FrozenInputs, LatentSpace
from ldlm_jax.latent_spaces.tokenwise import (EncoderEmbeddingLatents, FrozenFeatureLatents,
                                              ScratchEmbeddingLatents)
from ldlm_jax.latent_spaces.vae import TextVAE

REGISTRY: dict[str, type[LatentSpace]] = {
    'ldlm': JointAutoencoder,
    'scratch_emb': ScratchEmbeddingLatents,
    'encoder_emb': EncoderEmbeddingLatents,
    'tencdm': FrozenFeatureLatents,
    'cosmos': CosmosAutoencoder,
    'textldm_vae': TextVAE,
}


def latent_space_class(config) -> type[LatentSpace]:
  name = config.latent_space.name
  if name not in REGISTRY:
    raise ConfigError(f'latent_space.name={name!r} is not one of {tuple(REGISTRY)}; '
                      'set --config.latent_space.name to one of them.')
  return REGISTRY[name]


__all__ = ['COMPONENTS', 'Dims', 'FrozenInputs', 'LatentSpace', 'REGISTRY', 'latent_space_class']
