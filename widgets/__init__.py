"""The explorer: widgets over reglab runs (installed as reglab.widgets)."""
