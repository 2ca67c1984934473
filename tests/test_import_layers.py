"""The package keeps its import layers (scripts/check_imports.py), and the check catches a breach."""

import importlib.util
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checker():
  spec = importlib.util.spec_from_file_location('check_imports', os.path.join(ROOT, 'scripts', 'check_imports.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


check_imports = _checker()


def test_no_upward_import_and_no_cycle():
  assert check_imports.problems(ROOT) == []


@pytest.fixture
def tree(tmp_path):
  """A copy of the package to plant imports in."""
  shutil.copytree(os.path.join(ROOT, 'ldlm_jax'), tmp_path / 'ldlm_jax',
                  ignore=shutil.ignore_patterns('__pycache__'))
  return tmp_path


def _plant(root, relpath: str, code: str) -> None:
  with open(os.path.join(root, relpath), 'a', encoding='utf-8') as f:
    f.write(code)


def test_a_planted_upward_import_fails(tree):
  # Inside a function, as the lazy imports that used to hide the cycles were.
  _plant(tree, 'ldlm_jax/diffusion/schedule.py', '\n\ndef _planted():\n  from ldlm_jax.training import loop\n  return loop\n')
  found = check_imports.problems(str(tree))
  # The line itself, and the cycle it closes (training.loop imports the diffusion modules).
  assert any(line.startswith('ldlm_jax/diffusion/schedule.py:') and
             'ldlm_jax.diffusion.schedule (layer 1, blocks) imports ldlm_jax.training.loop (layer 7, training)'
             in line for line in found), found
  assert any(line.startswith('import cycle among') for line in found), found
  assert check_imports.main(['--root', str(tree)]) == 1


def test_a_planted_cycle_within_a_layer_fails(tree):
  # registry imports tokenizers; tokenizers importing registry back closes a cycle in one layer.
  _plant(tree, 'ldlm_jax/encoders/tokenizers.py', '\nfrom ldlm_jax.encoders import registry  # noqa\n')
  found = check_imports.problems(str(tree))
  assert any(line.startswith('import cycle among') and 'ldlm_jax.encoders.registry' in line
             and 'ldlm_jax.encoders.tokenizers' in line for line in found), found


def test_a_lazily_exported_name_counts_as_its_module(tree):
  # `from ldlm_jax.data import make_train_iterator` is data.pipeline (layer 5) behind data/__init__.
  _plant(tree, 'ldlm_jax/config.py', '\nfrom ldlm_jax.data import make_train_iterator  # noqa\n')
  found = check_imports.problems(str(tree))
  assert any('imports ldlm_jax.data.pipeline (layer 5, data)' in line for line in found), found


def test_a_new_module_needs_a_layer(tree):
  os.makedirs(tree / 'ldlm_jax' / 'newpkg')
  (tree / 'ldlm_jax' / 'newpkg' / '__init__.py').write_text('')
  found = check_imports.problems(str(tree))
  assert found == ['ldlm_jax.newpkg is in no layer: add it to LAYERS in scripts/check_imports.py.']
