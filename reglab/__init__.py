"""reglab: see why step size, batch size, weight decay and rank change what a network learns.

Importing reglab changes nothing around it; a notebook switches its conveniences on with
`reglab.setup_notebook()` (plain one-line messages for bad input, offline chart rendering).
"""
from . import curvature
from .claims import Claim, record
from .config import ConfigError, RunConfig, validate
from .data import Dataset, from_arrays, make_dataset
from .engine import Run, TrainState, train
from .notebook import setup_notebook
from .sweep import SweepResult, sweep
from .theme import Param, Result, Theme

__all__ = ["curvature", "Claim", "record", "ConfigError", "RunConfig", "validate", "Dataset", "from_arrays", "make_dataset",
           "Run", "TrainState", "train", "setup_notebook", "sweep", "SweepResult", "Param", "Result", "Theme"]
__version__ = "0.1.0"
