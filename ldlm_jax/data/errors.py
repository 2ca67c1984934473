"""The one exception the data package raises for problems a user can fix.

A missing corpus, an empty one, a TFDS dataset that is not prepared locally, a
prepared dataset built with another tokenizer: each stops with a `DataError`
whose message is one sentence naming the fix. It is a `UserError` (one line from every CLI) and a `ValueError`, so
callers that already catch bad values (and `ConfigError`) need nothing new.
"""

from __future__ import annotations

from ldlm_jax.errors import UserError


class DataError(UserError, ValueError):
  """Input data that cannot be used as configured; the message says the fix."""
