"""The summary of scripts/bench_gpu.sh: one JSON and one markdown table from its runs.

  python -m ldlm_jax.benchmarks.gpu_report OUT_DIR

reads OUT_DIR/steps.tsv (one line per step the script ran: name, exit code,
wall seconds, the command) and each step's `--json_out` file OUT_DIR/NAME.json,
and writes OUT_DIR/bench_gpu.json (every payload, keyed by step) and
OUT_DIR/bench_gpu.md (one row per measured configuration, with the speed
targets: LM1B train >= 45% of bf16 peak, OWT sampling 16 x 1024 in <= 6.5 s).
"""

from __future__ import annotations

import json
import os
import sys

from ldlm_jax import cli, fileio

GiB = 2.0 ** 30
TRAIN_UTIL_TARGET = 0.45
SAMPLE_SECONDS_TARGET = 6.5


def _gib(value) -> str:
  return 'n/a' if value is None else f'{value / GiB:.2f} GiB'


def read_steps(out_dir: str) -> list[dict]:
  steps = []
  path = os.path.join(out_dir, 'steps.tsv')
  if not os.path.exists(path):
    return steps
  with open(path, encoding='utf-8') as f:
    for line in f:
      name, rc, wall, command = line.rstrip('\n').split('\t', 3)
      payload_path = os.path.join(out_dir, f'{name}.json')
      payload = None
      if os.path.exists(payload_path):
        with open(payload_path, encoding='utf-8') as p:
          payload = json.load(p)
      steps.append({'name': name, 'rc': int(rc), 'wall_s': float(wall), 'command': command,
                    'payload': payload})
  return steps


def _row(step: dict, result: dict) -> list[str]:
  kind = result['kind']
  label = step['name']
  if kind == 'train':
    label += f' (CE chunk {result.get("ce_vocab_chunk", "?")}, remat {result.get("remat", "?")})'
    util = result['utilization']
    mem = result['memory']
    peak = mem.get('device_peak_bytes') or mem['compiled'].get('total_estimate')
    return [label, f'{result["step_time"]["median_s"] * 1e3:.1f} ms/step',
            f'{100 * util:.1f}%', _gib(peak),
            'met' if util >= TRAIN_UTIL_TARGET else 'not met']
  if kind == 'sample':
    seconds = result['sampler_call']['median_s']
    peak = result['memory'].get('device_peak_bytes')
    return [label, f'{seconds:.2f} s per {result["batch_size"]} x {result["num_steps"]} steps',
            f'{100 * result["utilization"]:.1f}%', _gib(peak),
            'met' if seconds <= SAMPLE_SECONDS_TARGET else 'not met']
  plan = result.get('plan_per_device') or {}
  return [label, f'plan {_gib(plan.get("total"))} per device ({result["per_device_batch"]} '
          f'per device, remat {result.get("remat", "?")})', '', _gib(plan.get('total')),
          f'activations/temporaries {_gib(plan.get("activations_and_temporaries"))}']


def summarize(out_dir: str) -> tuple[dict, str]:
  steps = read_steps(out_dir)
  lines = ['| step | result | utilization | memory | target |', '|---|---|---|---|---|']
  summary = {'steps': []}
  for step in steps:
    entry = {k: step[k] for k in ('name', 'rc', 'wall_s', 'command')}
    payload = step['payload']
    if step['rc'] != 0 or payload is None:
      why = 'timed out' if step['rc'] in (124, 137) else (
          'skipped: out of time' if step['rc'] == -1 else f'failed (exit {step["rc"]})')
      lines.append(f'| {step["name"]} | {why} | | | |')
    else:
      entry['payload'] = payload
      entry['xla_gpu_flags_added'] = payload.get('xla_gpu_flags_added', [])
      for result in payload['results']:
        lines.append('| ' + ' | '.join(_row(step, result)) + ' |')
    summary['steps'].append(entry)
  commands = [f'- `{s["name"]}` ({s["wall_s"]:.0f} s): `{s["command"]}`' for s in steps]
  markdown = '\n'.join(lines + ['', 'Commands:'] + commands) + '\n'
  return summary, markdown


@cli.user_errors_exit_2
def main(argv):
  if len(argv) != 2:
    print('usage: python -m ldlm_jax.benchmarks.gpu_report OUT_DIR', file=sys.stderr)
    return 2
  out_dir = argv[1]
  summary, markdown = summarize(out_dir)
  fileio.write_text(os.path.join(out_dir, 'bench_gpu.json'),
                    json.dumps(summary, indent=2, sort_keys=True, default=float))
  fileio.write_text(os.path.join(out_dir, 'bench_gpu.md'), markdown)
  print(markdown)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
