"""Shared test helpers."""
import pytest


@pytest.fixture
def presets_apply():
    """A check that every explorer preset of a theme's result is accepted as written (no message) and sets
    the values it names."""
    def check(result):
        ex = result.explorer(headless=True)
        try:
            for name, preset in result.exploration.presets.items():
                assert not ex.apply_preset(name), name
                assert all(ex.values[k] == v for k, v in preset["values"].items()), name
        finally:
            ex.close()
    return check
