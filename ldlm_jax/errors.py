"""The base of every error whose message is written for the user, and the configuration error.

A `UserError` is a problem the user can fix (a flag, a config value, a file, a
missing package); its message is one sentence naming the fix. Every command line
catches `UserError` in one place (`ldlm_jax.cli`) and prints `error: <message>` on
stderr with exit code 2, never a traceback. Any other exception is a bug and keeps
its traceback.

The user errors, each defined beside the code that raises it:
  ConfigError               here (raised at every layer; `ldlm_jax.config` re-exports it)
    EncoderLoadError          encoders/loading.py
    NormStatsError            encoders/normalization.py
    CheckpointMismatchError   training/checkpoint.py
    CheckpointDamagedError    training/checkpoint.py
  DataError                 data/errors.py
  TokenizerNotFoundError    encoders/tokenizers.py
  GGUFModelError            evaluation/gguf_model.py
  ScorerError               evaluation/scorers.py
  MauveUnavailableError     evaluation/mauve_score.py
  PlotsError                evaluation/plots.py
  EvaluationError           evaluate.py
  ExperimentError           experiments.py
Each also keeps the builtin base it had before (ValueError, FileNotFoundError,
ImportError), so code catching those still catches it.

This module imports nothing from the project: every layer may raise these.
"""

from __future__ import annotations


class UserError(Exception):
  """A problem the user can fix; the message is one sentence naming the fix."""


class ConfigError(UserError, ValueError):
  """A configuration value a user set that cannot work; the message says the fix."""
