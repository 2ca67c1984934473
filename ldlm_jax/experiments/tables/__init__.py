"""The tables `python -m ldlm_jax.experiments run TABLE` reproduces: one module per table, named here.

A table module defines
  TITLE                    the report's heading
  rows(scale) -> [Row]     its rows, in the report's order (configs: `row_configs`)
  adjust_scale(scale)      optional: the scale with the table's own sampling budgets / batch
  orderings(data, plan)    optional: [(paper's claim, verdict, numbers)] from the report's data,
                           computed with `verdicts` (a table without it reports no orderings)
  SIDE_BY_SIDE             optional: rows whose train step and sampling times the sweep measures
                           again side by side in one process when its runs are done (side_by_side)
Adding a table: its module in this package, its name in NAMES, its test in tests/test_experiment_tables.py.
Importing this package or a table module imports no jax.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ldlm_jax.experiments.spec import ExperimentError, Row, Scale

NAMES = ('table1', 'table2', 'table4', 'table6', 'table7', 'textldm', 'main')


def get(name: str) -> ModuleType:
  """The table module called `name` (one of NAMES)."""
  if name not in NAMES:
    raise ExperimentError(f'Unknown table {name!r}; choose one of {", ".join(NAMES)}.')
  return importlib.import_module(f'{__name__}.{name}')


def rows(name: str, scale: Scale) -> list[Row]:
  """The table's rows at this scale."""
  return get(name).rows(scale)


def orderings(name: str, data: dict, plan: dict) -> list[tuple[str, str, str]]:
  """(paper's claim, verdict, numbers) for each ordering the paper reports for this table."""
  module = get(name)
  return module.orderings(data, plan) if hasattr(module, 'orderings') else []
