"""One module per research theme: declared parameters, experiments, claims and charts (see reglab.theme).

MODULES maps each notebook to its theme module; `theme_of(notebook)` is that module's `Theme`.
"""
from __future__ import annotations

import importlib

MODULES = {
    "00_quickstart": "quickstart",
    "01_stability": "stability",
    "02_sgd_noise": "sgd_noise",
    "03_low_rank": "low_rank",
    "04_grokking": "grokking",
    "05_neural_collapse": "neural_collapse",
    "06_double_descent": "double_descent",
    "07_max_margin": "max_margin",
    "08_rare_tokens": "rare_tokens",
    "09_generalization_measures": "generalization",
    "10_large_batch": "large_batch",
    "11_transformer_stability": "transformer_stability",
}


def module_of(notebook: str):
    return importlib.import_module(f"{__name__}.{MODULES[notebook]}")


def theme_of(notebook: str):
    """The declared `Theme` of a notebook (by its stem, e.g. "01_stability")."""
    return module_of(notebook).THEME
