"""Measurement scripts behind numbers in BUILD_NOTES.md, one purpose per module.

Run from the repository root as `python -m scripts.analysis.NAME ARGS` (or `python
scripts/analysis/NAME.py ARGS`: they import only `ldlm_jax` and the standard library, and edit
no sys.path). Each has a smoke test in tests/test_analysis_scripts.py (reconstruction_row's is
in tests/test_sample_cli.py, beside the trained tiny run it needs; sampler_order's in
tests/test_main_table.py, beside the smoke sweep it needs).

  encoder_share        share of a train step spent in the frozen encoder's forward pass
  heldout_recon        held-out autoencoder reconstruction accuracy of a trained run
  embedding_readout    token identity a linear map into the encoder's embedding table reads
  reconstruction_row   held-out text encoded and decoded, as a samples file (the autoencoder's ceiling)
  seed_eval            a run sampled with 3 seeds and evaluated (Gen. PPL, MAUVE, n-gram rows)
  tempered_ngrams      tempered n-gram sample sets scored like a run's samples
  continuation_table   mean +- std over seeds of `evaluate --task continuation` outputs
  condition_path_time  forward+backward time of the DiT's condition paths
  sampler_order        one row's sampling batch alone and after the other rows' samplers (Table 3)
"""
