"""The explorer: widgets over reglab runs (installed as reglab.widgets).

    from reglab.widgets import Explorer, IntRange, LogRange, Choice
    Explorer(config, chart=my_chart, extra={"steps": IntRange(100, 5000)})
"""
from .controls import NO_OFF, Choice, FloatRange, IntRange, LogRange, Toggle
from .explorer import Explorer, default_chart, train_run
from .predict import Prediction
from .session import LiveRun, Session

__all__ = ["Explorer", "Prediction", "LogRange", "FloatRange", "IntRange", "Choice", "Toggle", "NO_OFF", "LiveRun", "Session",
           "default_chart", "train_run"]
