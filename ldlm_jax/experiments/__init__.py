r"""The paper's tables reproduced at small scale: one command per table.

  python -m ldlm_jax.experiments run TABLE --scale SCALE --seeds N --out DIR \
      [--rows a,b,...] [--skip_unavailable] [--reuse OTHER_SWEEP_DIR ...] [--publish docs/results]
  python -m ldlm_jax.experiments report DIR [--publish docs/results]
  python -m ldlm_jax.experiments time DIR [--seed S] [--repeats N]
  python -m ldlm_jax.experiments ab_final WORKDIR --out DIR [--steps 25,50,100]

TABLE: table1 (reconstruction loss; diffusion-to-encoder warmup; uniform vs adaptive
timesteps; the sigma_dec grid), table2 (latent spaces), table4 (encoder layer), table6
(encoder family), table7 (Perceiver vs self-attention), textldm (TextLDM with and without
REPA next to LDLM at the same scale and DiT), main (LDLM against MDLM, ReMDM, Duo and AR on one
backbone, at equal steps, training FLOPs and wall clock). SCALE: smoke (seconds per row, a tiny random
scorer: the numbers mean nothing; for tests), cpu (configs/demo.py, about ten minutes of
training per run on 2 cores), gpu (configs/demo.py scaled up; a size that means something on
one accelerator).

Reference rows, with no diffusion at all, go through the same evaluation: unigram, bigram and
trigram samples fitted to the same training split (`evaluation.ngram`), one sample set per seed,
their tempered versions, and held-out text itself (reference-split chunks other than the MAUVE
references).

Outputs: DIR/TABLE.md (mean +- std over seeds per row, the exact command, machine and date at
the top, one verdict line per paper ordering computed from the numbers), DIR/TABLE.json (every
number) and DIR/pareto.png (Gen. PPL against entropy across step counts, one curve per row: the
paper's Fig. 1 form). `report` redraws them from the runs' saved evaluations; with --publish P
it also writes them to P and mirrors the evaluations (JSON only) into P/raw/TABLE, from which
`report` redraws and which, copied into a fresh sweep directory, continues a partly finished
sweep on another machine; `run --publish P` writes them after every run that finishes, so a
sweep on a machine that may be lost keeps every finished run. A table with SIDE_BY_SIDE rows (main) ends its sweep with Table 3:
those rows' train steps and samplers timed side by side in one process (DIR/side_by_side.json;
`time` runs that phase alone).

The package, one concern a module:
  spec.py         Scale, SCALES, Row, REFERENCE_ROWS, ExperimentError (plain data)
  tables/         one module per table (TITLE, rows(scale), optional orderings); NAMES is the registry
  row_configs.py  a row x seed -> its configs (one per stage), availability, config hash
  records.py      the sweep directory's files (plan.json, done.json, alias.json) and JSON helpers
  sweep.py        run_table: train, sample, evaluate every row x seed; resume; stages
  reuse.py        --reuse: another sweep's finished run with the same config, seed and protocol
  evaluator.py    the scorer, MAUVE references and machine description shared by a sweep
  report.py       JSON records in, TABLE.md / TABLE.json / pareto plot out (no jax)
  verdicts.py     the paper's orderings judged from the numbers
  side_by_side.py Table 3: the rows' train step and sampler timed side by side in one process
  ab_final.py     the one-off A/B study of the decoded latent (z vs x0_hat)
  cli.py          the command line
Importing the package, `tables`, `report` or `verdicts` imports no jax; `sweep`, `side_by_side`
and `ab_final` load it when they run.
"""
