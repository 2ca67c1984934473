"""Repository scripts; scripts/analysis holds the measurement scripts (a package: `python -m scripts.analysis.NAME`)."""
