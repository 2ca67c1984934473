"""The import layers of `ldlm_jax`, and the check that keeps them.

    python scripts/check_imports.py            # exit 1 and one line per problem
    python scripts/check_imports.py --layers   # the layer of every module

CI runs it (scripts/test.sh, and tests/test_import_layers.py). Layers, top to bottom:

  9 entry points  train sample evaluate bench plots post_train_decoder experiments(.*),
                  export, and api (the Python API the CLIs wrap)
  8 uses          sampling, evaluation.*, benchmarks.*
  7 training      training.*
  6 model         models.ldlm (the LDLM: a latent space, a process, a denoiser) and
                  methods.* (the discrete baselines and the method registry)
  5 data          data.*, conditioning
  4 cli           cli (one-line user errors, config-file flags for every command line)
  3 config        config (the schema, validated against the registries below it)
  2 parts         latent_spaces.*, encoders.*, evaluation.gguf_model
  1 blocks        models.* (layers, perceiver, dit, ...), diffusion.*, evaluation.llama
  0 leaves        errors, protocols, fileio, xla_flags, and the package __init__ files

A module may import modules of its own layer or below, never above, and the module
graph has no cycle. Every import counts, whether at the top of a module or inside a
function (a function-level import is still a dependency). Importing `a.b.c` also
imports the packages `a` and `a.b`, so those count too (for the layers; a package
importing its own modules is not a cycle). `from pkg import name`, where pkg's
__init__ resolves `name` lazily from its `_EXPORTS` table (data, encoders), counts
as an import of the module that defines `name`.

evaluation.llama (the Llama network) and evaluation.gguf_model (its GGUF reader) are
model code that the encoder registry loads (the 'smollm2-135m' encoder) as well as
the scorers: they sit with the blocks and parts, below the rest of evaluation.

Only the standard library is used, so this runs before anything is installed.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

PACKAGE = 'ldlm_jax'

# Layer number -> (name, module patterns). 'x.*' matches every module below x; a plain
# name matches that module only; the most specific pattern wins.
LAYERS = {
    0: ('leaves', ['ldlm_jax', 'ldlm_jax.errors', 'ldlm_jax.fileio', 'ldlm_jax.protocols', 'ldlm_jax.xla_flags',
                   'ldlm_jax.models', 'ldlm_jax.diffusion', 'ldlm_jax.encoders', 'ldlm_jax.data',
                   'ldlm_jax.training', 'ldlm_jax.evaluation', 'ldlm_jax.benchmarks']),
    1: ('blocks', ['ldlm_jax.models.*', 'ldlm_jax.diffusion.*', 'ldlm_jax.evaluation.llama']),
    2: ('parts', ['ldlm_jax.latent_spaces', 'ldlm_jax.latent_spaces.*', 'ldlm_jax.encoders.*',
                  'ldlm_jax.evaluation.gguf_model']),
    3: ('config', ['ldlm_jax.config']),
    4: ('cli', ['ldlm_jax.cli']),
    5: ('data', ['ldlm_jax.data.*', 'ldlm_jax.conditioning']),
    6: ('model', ['ldlm_jax.models.ldlm', 'ldlm_jax.methods', 'ldlm_jax.methods.*']),
    7: ('training', ['ldlm_jax.training.*']),
    8: ('uses', ['ldlm_jax.sampling', 'ldlm_jax.evaluation.*', 'ldlm_jax.benchmarks.*']),
    9: ('entry points', ['ldlm_jax.train', 'ldlm_jax.sample', 'ldlm_jax.evaluate', 'ldlm_jax.bench',
                         'ldlm_jax.plots', 'ldlm_jax.post_train_decoder', 'ldlm_jax.experiments',
                         'ldlm_jax.experiments.*', 'ldlm_jax.api', 'ldlm_jax.export']),
}


def find_modules(root: str) -> dict[str, str]:
  """Dotted module name -> file path, for every .py file of the package under `root`."""
  modules = {}
  for directory, dirs, files in os.walk(os.path.join(root, PACKAGE)):
    dirs[:] = sorted(d for d in dirs if d != '__pycache__')
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        dotted = os.path.relpath(path, root)[:-3].replace(os.sep, '.')
        modules[dotted.removesuffix('.__init__')] = path
  return modules


def layer_of(module: str) -> int | None:
  best, best_len = None, -1
  for number, (_, patterns) in LAYERS.items():
    for pattern in patterns:
      if pattern.endswith('.*'):
        prefix = pattern[:-1]
        hit = module.startswith(prefix)
        length = len(prefix)
      else:
        hit = module == pattern
        length = len(pattern) + 1   # an exact name beats a prefix of the same length
      if hit and length > best_len:
        best, best_len = number, length
  return best


def _lazy_exports(path: str) -> dict[str, str]:
  """A package __init__'s `_EXPORTS = {'Name': 'submodule', ...}` table, if it has one."""
  tree = ast.parse(open(path, encoding='utf-8').read(), path)
  for node in tree.body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name) and node.targets[0].id == '_EXPORTS'):
      return ast.literal_eval(node.value)
  return {}


def imports_of(module: str, path: str, modules: dict[str, str]) -> list[tuple[str, int]]:
  """(imported project module, line) for every import statement in the file, at any depth."""
  tree = ast.parse(open(path, encoding='utf-8').read(), path)
  is_package = path.endswith('__init__.py')
  package = module if is_package else module.rpartition('.')[0]
  found = []

  def resolve(name: str) -> str | None:
    while name and name not in modules:
      name = name.rpartition('.')[0]
    return name or None

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')
        parts = parts[:len(parts) - (node.level - 1)]
        base = '.'.join(parts + ([node.module] if node.module else []))
      targets = []
      for alias in node.names:
        full = f'{base}.{alias.name}'
        if full in modules:
          targets.append(full)
        elif base in modules and modules[base].endswith('__init__.py'):
          exported = _lazy_exports(modules[base]).get(alias.name)
          targets.append(f'{base}.{exported}' if exported else base)
        else:
          targets.append(base)
    else:
      continue
    for target in targets:
      if target.split('.')[0] != PACKAGE:
        continue
      resolved = resolve(target)
      if resolved and resolved != module:
        found.append((resolved, node.lineno))
  return found


def _parents(module: str) -> list[str]:
  parts = module.split('.')
  return ['.'.join(parts[:i]) for i in range(1, len(parts))]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan, iterative)."""
  index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph[start])))]
    index[start] = low[start] = counter[0]
    counter[0] += 1
    stack.append(start)
    on_stack.add(start)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = counter[0]
          counter[0] += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph.get(child, ())))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          result.append(sorted(component))
  return result


def problems(root: str) -> list[str]:
  """One sentence per module without a layer, upward import, and import cycle."""
  modules = find_modules(root)
  out = []
  for module in sorted(modules):
    if layer_of(module) is None:
      out.append(f'{module} is in no layer: add it to LAYERS in scripts/check_imports.py.')
  if out:
    return out
  graph = {module: set() for module in modules}
  for module, path in sorted(modules.items()):
    here = layer_of(module)
    for target, line in imports_of(module, path, modules):
      graph[module].add(target)
      for imported in [target] + [p for p in _parents(target) if not module.startswith(p + '.')
                                  and p != module]:
        there = layer_of(imported)
        if there > here:
          rel = os.path.relpath(path, root)
          out.append(f'{rel}:{line}: {module} (layer {here}, {LAYERS[here][0]}) imports '
                     f'{imported} (layer {there}, {LAYERS[there][0]}), above it.')
  for component in _cycles(graph):
    out.append(f'import cycle among {", ".join(component)}.')
  return sorted(set(out))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      help='the repository root (default: the one holding this script)')
  parser.add_argument('--layers', action='store_true', help='print the layer of every module')
  args = parser.parse_args(argv)
  if args.layers:
    for module in sorted(find_modules(args.root), key=lambda m: (layer_of(m) or -1, m)):
      number = layer_of(module)
      print(f'{number if number is not None else "?"} {LAYERS[number][0] if number is not None else "-":<13} {module}')
  found = problems(args.root)
  for line in found:
    print(line, file=sys.stderr)
  if found:
    print(f'check_imports: {len(found)} problem(s).', file=sys.stderr)
    return 1
  print(f'check_imports: {len(find_modules(args.root))} modules in {len(LAYERS)} layers, '
        'no upward import, no cycle.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
