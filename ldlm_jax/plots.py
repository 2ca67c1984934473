"""Draws the diagnostic plots of a training run as PNG files.

  python -m ldlm_jax.plots --workdir runs/demo [--out_dir DIR] [--num_curves 4]

Reads WORKDIR/metrics.jsonl and WORKDIR/timesteps.jsonl (no checkpoint, no
accelerator, no model) and writes into WORKDIR/plots/ (or --out_dir):
  losses.png          total, diffusion, reconstruction and CE loss, train and eval
  reconstruction.png  token reconstruction accuracy and latent norm, train and eval
  schedules.png       diffusion-to-encoder lambda, learning rate, gradient norm
  loss_vs_t.png       per-bin diffusion loss against t and against F(t) (paper Fig. 5)
  adaptive_cdf.png    the adaptive sampler's learned CDF F(t) and its density
  latent_health.png   the latents' content fraction, the t where the content's SNR
                      falls to 1, and the one-shot denoising curve (token accuracy
                      of decode(x0_hat(z_t)) against t) at up to --num_curves evaluations
for up to --num_curves logged steps of timesteps.jsonl, spread over the run.
Prints the path of each file written. It can run while training goes on.
Argparse rather than absl flags: the command takes no config.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ldlm_jax import cli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = cli.ArgumentParser(prog='python -m ldlm_jax.plots', description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='Work directory of a training run.')
  parser.add_argument('--out_dir', default=None, help='Where to write the PNGs (default WORKDIR/plots).')
  parser.add_argument('--num_curves', type=int, default=4,
                      help='Logged steps of timesteps.jsonl drawn in the per-t plots (the last included).')
  args = parser.parse_args(argv)
  if args.num_curves < 1:
    parser.error(f'--num_curves must be at least 1, got {args.num_curves}.')
  return args


@cli.user_errors_exit_2
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  # Imported after the flags are parsed: matplotlib takes a while to load.
  from ldlm_jax.evaluation import plots  # noqa: PLC0415
  # The output folder checked before anything is drawn.
  cli.check_output_dir(args.out_dir or os.path.join(args.workdir, 'plots'), '--out_dir')
  report = plots.write_plots(args.workdir, args.out_dir, args.num_curves)
  for path in report.written:
    print(path)
  for reason in report.skipped:
    print(f'skipped {reason}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
