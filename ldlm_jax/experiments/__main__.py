"""`python -m ldlm_jax.experiments ...`: see ldlm_jax/experiments/__init__.py."""

import sys

from ldlm_jax.experiments.cli import main

sys.exit(main())
