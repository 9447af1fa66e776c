"""Hyper-parameter search over a recipe's config with optuna (``hftransfer tune``; docs/tuning.md).

``space.py`` reads the search-space file, ``flows.py`` maps a preset to its recipe's parse and setup,
``trial.py`` runs one trial in-process with pruning, ``study.py`` runs the study (storage, resume, outputs),
``preset.py`` writes ``best.yaml``, ``report.py`` the trials table and ``command.py`` the subcommand. Nothing here
imports optuna or torch at import time, so ``hftransfer --help`` stays fast and a missing optuna is one line.
"""
