"""Launchers that start `python -m ldlm_jax.train` on many hosts (TPU pod slices, SLURM clusters).

Run from a checkout: `python launch/tpu_pod.py ...` or `python launch/slurm.py ...`
(`python -m launch.tpu_pod` from the repository root works too). Not part of
the installed package: they run on the machine you launch from.
"""
