"""ldlm_jax: Latent Diffusion Language Model (LDLM) in JAX/Flax."""
import setuptools

# Ranges accept the versions known to install together on CPU (jax 0.10.2,
# Python 3.11) and the GPU image (jax 0.11.x, Python 3.12, CUDA 13).
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.12",
    "flax>=0.12.8,<0.14",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "array-record>=0.8.6,<0.9",
    "ml-collections>=1.1.0,<2",
    "clu>=0.0.12",
    "tensorflow-datasets>=4.9.10,<5",
    "importlib_resources",
    "tensorboardX>=2.6.5",
    "safetensors>=0.4",
    "tokenizers>=0.19",
    "numpy>=1.26",
    "absl-py",
    "tqdm",
    "pyarrow",
    "gguf>=0.10",
    "matplotlib",
]

EXTRAS_REQUIRE = {
    # Test-only references: the Hugging Face implementation (PyTorch and its
    # last Flax release) for encoder parity tests; pytest-xdist runs the suite
    # on every core (the tests use about one core each); ruff lints (ruff.toml).
    "test": ["pytest>=8", "pytest-xdist>=3.5", "torch>=2.1", "transformers==4.57.6", "ruff>=0.15"],
    # MAUVE for evaluation (pulls scikit-learn and faiss-cpu).
    "eval": ["mauve-text>=0.4", "faiss-cpu>=1.7", "scikit-learn>=1.3"],
}

setuptools.setup(
    name="ldlm_jax",
    version="0.1.0",
    description="LDLM: latent diffusion language model trained jointly with its latent space (JAX/Flax).",
    packages=setuptools.find_packages(include=["ldlm_jax", "ldlm_jax.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
