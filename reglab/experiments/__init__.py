"""One module per research theme: its experiments, charts and claim checks."""
