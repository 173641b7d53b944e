"""reglab: see why step size, batch size, weight decay and rank change what a network learns."""
from .config import ConfigError, RunConfig, validate
from .data import Dataset, from_arrays, make_dataset
from .engine import Run, TrainState, train

__all__ = ["ConfigError", "RunConfig", "validate", "Dataset", "from_arrays", "make_dataset", "Run", "TrainState", "train"]
__version__ = "0.1.0"

from .claims import Claim, Result, record
from .notebook import show_config_errors_plainly as _plain_errors

_plain_errors()
