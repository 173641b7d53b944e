"""Bring-your-own data: every accepted container works, and bad data is refused in one clear line."""
import numpy as np
import pandas as pd
import pytest
import torch

from reglab import ConfigError, RunConfig, from_arrays, train

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3)).astype("float32")
Y = RNG.integers(0, 3, 40)


@pytest.mark.parametrize("convert", [list, np.asarray, torch.as_tensor, lambda a: pd.DataFrame(a) if a.ndim == 2 else pd.Series(a)],
                         ids=["list", "numpy", "torch", "pandas"])
def test_every_container_gives_the_same_data(convert):
    data = from_arrays(convert(X[:30].tolist() if convert is list else X[:30]), convert(Y[:30].tolist() if convert is list else Y[:30]),
                       convert(X[30:].tolist() if convert is list else X[30:]), convert(Y[30:].tolist() if convert is list else Y[30:]))
    assert data.task == "classification" and data.n_classes == int(Y[:30].max()) + 1
    assert torch.equal(data.x_train, torch.as_tensor(X[:30])) and torch.equal(data.y_test, torch.as_tensor(Y[30:]))


def test_integer_features_are_cast_and_regression_targets_train():
    data = from_arrays(np.arange(60).reshape(20, 3), np.linspace(0, 1, 20))
    assert data.x_train.dtype == torch.float32 and data.task == "regression" and data.y_train.shape == (20, 1)
    run = train(RunConfig(data="arrays", loss="mse", width=8, steps=10, eval_every=5, step_size=1e-4), data=data, progress=False)
    assert run.diverged_step(0) is None


@pytest.mark.parametrize("args, message", [
    ((np.where(np.arange(120).reshape(40, 3) == 7, np.nan, X), Y), r"'x_train'.*finite.*nan at index \(2, 1\)"),
    ((X, np.where(np.arange(40) == 5, -1, Y)), r"'y_train'.*labels ≥ 0. Got -1 at index 5"),
    ((X[:30], Y[:30], X[30:], np.where(np.arange(10) == 4, 7, Y[30:])), r"'y_test'.*label 7 at index 4.*never occurs in y_train"),
    ((np.array([["a", "b", "c"]] * 40), Y), r"'x_train'.*must hold numbers.*got dtype <U1, e.g. 'a'"),
    ((X, Y[:39]), r"x_train has 40 rows but y_train has 39"),
    ((X[:, 0], Y), r"'x_train'.*2-D.*Got shape \(40,\)"),
    ((X, Y + 0.5, None, None, "classification"), r"'y_train'.*integer class labels.*Got \d\.5 at index 0"),
    ((X, np.where(np.arange(40) == 3, np.inf, 0.5)), r"'y_train'.*finite.*index 3"),
    ((X, Y, X[:5, :2], Y[:5]), r"x_test has 2 features but x_train has 3"),
])
def test_bad_data_is_one_clear_message(args, message):
    with pytest.raises(ConfigError, match=message):
        from_arrays(*args)
