import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

from reglab import ConfigError, RunConfig, from_arrays, make_dataset, train

SMALL = RunConfig(data="digits", n_train=200, width=32, depth=2, step_size=0.1, batch_size=16, steps=60, eval_every=20)


TRANSFORMER = RunConfig(data="zipf_sequences", n_train=256, data_options={"vocab": 16, "context": 8, "n_test": 64},
                        model="transformer", width=16, depth=2, heads=2, optimizer="adamw", steps=12, eval_every=6)


@pytest.mark.parametrize("configs", [
    [SMALL.replace(step_size=s, seed=k, batch_size=b, weight_decay=w)
     for s, k, b, w in [(0.05, 0, 16, 0.0), (0.2, 1, 8, 1e-3), (0.1, 2, 200, 0.0)]],
    [TRANSFORMER.replace(step_size=s, seed=k, batch_size=b, weight_decay=w)
     for s, k, b, w in [(3e-3, 0, 32, 0.0), (1e-2, 1, 16, 0.1), (1e-3, 2, 256, 0.0)]],
], ids=["mlp", "transformer"])
def test_member_of_ensemble_matches_training_alone(configs):
    ensemble = train(configs, progress=False)
    for m, cfg in enumerate(configs):
        alone = train(cfg, progress=False)
        for name, p in alone.params.items():
            torch.testing.assert_close(ensemble.params[name][m], p[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ensemble.summary.train_loss[m], alone.summary.train_loss[0], rtol=1e-4)


@pytest.mark.parametrize("changes", [
    dict(activation="relu"), dict(activation="tanh", batchnorm=True), dict(activation="gelu", rank=3, rank_layer=0),
    dict(activation="linear", bias=False), dict(rank=4, rank_layer=1, batchnorm=True, depth=3),
])
def test_mlp_matches_the_same_network_in_torch_nn(changes):
    """Each member of the stacked MLP computes what nn.Linear / nn.BatchNorm1d (training mode) / the
    activation compute with its weights."""
    from reglab.models import build_model

    data = make_dataset("digits", n_train=40)
    cfg = SMALL.replace(n_train=40, width=12, **changes)
    model = build_model(cfg, data)
    params = model.init([torch.Generator().manual_seed(s) for s in range(3)])
    act = {"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(), "gelu": torch.nn.GELU(), "linear": torch.nn.Identity()}
    out = model(params, data.x_train)
    for m in range(3):
        layers = []
        for i in range(cfg.depth + 1):
            w = model.weight(params, i)[m]
            linear = torch.nn.Linear(*w.shape, bias=cfg.bias)
            with torch.no_grad():
                linear.weight.copy_(w.T)
                if cfg.bias:
                    linear.bias.copy_(params[f"b{i}"][m])
            layers.append(linear)
            if i < cfg.depth:
                if cfg.batchnorm:
                    layers.append(torch.nn.BatchNorm1d(cfg.width, eps=1e-5).train())
                layers.append(act[cfg.activation])
        torch.testing.assert_close(out[m], torch.nn.Sequential(*layers)(data.x_train), rtol=1e-4, atol=1e-5)


def test_adamw_momentum_sam_clip_members_match_alone():
    base = SMALL.replace(optimizer="adamw", step_size=1e-2, steps=30)
    configs = [base.replace(weight_decay=0.1, seed=0), base.replace(weight_decay=0.0, seed=3, grad_clip=0.5)]
    ensemble = train(configs, progress=False)
    alone = train(configs[1], progress=False)
    torch.testing.assert_close(ensemble.params["W0"][1], alone.params["W0"][0], rtol=1e-4, atol=1e-5)
    sgd = [SMALL.replace(momentum=0.9, sam_radius=0.05, steps=20), SMALL.replace(momentum=0.5, seed=4, steps=20)]
    ens, one = train(sgd, progress=False), train(sgd[1], progress=False)
    torch.testing.assert_close(ens.params["W1"][1], one.params["W1"][0], rtol=1e-4, atol=1e-5)


def test_same_config_and_seed_gives_identical_numbers():
    a, b = train(SMALL, progress=False), train(SMALL, progress=False)
    assert a.history.equals(b.history)
    c = train(SMALL.replace(seed=1), progress=False)
    assert not a.history.equals(c.history)


def test_learning_happens():
    run = train(SMALL.replace(steps=300, eval_every=300), progress=False)
    first = run.history[(run.history.step == 0) & (run.history.metric == "train_loss")].value.item()
    assert run.summary.train_loss[0] < 0.5 * first
    assert run.summary.test_acc[0] > 0.5


def test_divergence_is_recorded_with_its_step_and_the_rest_survive():
    configs = [SMALL.replace(step_size=1e3, loss="mse"), SMALL.replace(step_size=0.05, loss="mse")]
    run = train(configs, progress=False)
    assert run.summary.diverged_at[0] is not None and 1 <= run.summary.diverged_at[0] <= 60
    assert run.summary.diverged_at.isna()[1] and run.diverged_step(1) is None
    assert np.isfinite(run.summary.train_loss[1])
    for p in run.params.values():
        assert torch.isfinite(p).all()  # the diverged member is frozen at finite parameters
    after = run.history[(run.history.run == 0) & (run.history.step > run.summary.diverged_at[0])]
    assert after.value.isna().all()


def test_stop_cancels_and_returns_what_was_done():
    stop = threading.Event()
    seen = []

    def on_eval(rows, step):
        seen.append(step)
        if step >= 20:
            stop.set()

    run = train(SMALL.replace(steps=1000), on_eval=on_eval, stop=stop, progress=False)
    assert run.stopped and max(seen) == 20 and run.history.step.max() == 20


def test_streaming_rows_are_tidy():
    rows = []
    train(SMALL, on_eval=lambda new, step: rows.extend(new), progress=False)
    assert {"run", "step", "metric", "value"} == set(rows[0])
    assert {r["step"] for r in rows} == {0, 20, 40, 60}


def test_ensemble_members_must_share_non_sweepable_fields():
    with pytest.raises(ConfigError, match="must share 'width'"):
        train([SMALL, SMALL.replace(width=10)], progress=False)


def test_batch_larger_than_data_and_rank_larger_than_width_are_clear():
    with pytest.raises(ConfigError, match="batch_size"):
        train(SMALL.replace(batch_size=201), progress=False)
    with pytest.raises(ConfigError, match="rank"):
        train(SMALL.replace(rank=33), progress=False)


def test_factorized_layer_trains_and_bring_your_own_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, :1] - x[:, 1:2] > 0).astype(np.int64).ravel()
    data = from_arrays(x[:48], y[:48], x[48:], y[48:])
    run = train(RunConfig(data="arrays", width=8, depth=1, rank=2, rank_layer=0, step_size=0.5, steps=200,
                          eval_every=100, loss="ce"), data=data, progress=False)
    assert {"U0", "V0", "W1"} <= set(run.params)
    assert run.summary.train_acc[0] > 0.9


def test_run_cache_replays_and_survives_a_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_CACHE", str(tmp_path))
    first = train(SMALL, cache=True, progress=False)
    files = list((tmp_path / "runs").glob("*.pkl"))
    assert len(files) == 1
    replayed = []
    again = train(SMALL, cache=True, on_eval=lambda rows, step: replayed.append(step), progress=False)
    assert again.history.equals(first.history) and replayed == [0, 20, 40, 60]
    files[0].write_bytes(b"truncated")  # a corrupt cache file is ignored and recomputed
    third = train(SMALL, cache=True, progress=False)
    assert third.history.equals(first.history)


def test_datasets_are_deterministic_and_local():
    a, b = make_dataset("modular", p=11, corrupt_fraction=0.2), make_dataset("modular", p=11, corrupt_fraction=0.2)
    assert torch.equal(a.y_train, b.y_train)
    assert int(a.info["corrupted"].sum()) == round(0.2 * a.n_train)
    m = make_dataset("mnist1d")
    assert m.x_train.shape == (4000, 40) and m.x_test.shape == (1000, 40)
    s = make_dataset("separable", d=3, margin=0.2)
    w = s.info["w_star"]
    assert ((s.x_train @ w).abs() >= 0.2 - 1e-6).all()
    with pytest.raises(ConfigError, match="'k' parameter of sparse_teacher"):
        make_dataset("sparse_teacher", d=3, k=5)


def test_batchnorm_members_must_share_a_batch_size():
    with pytest.raises(ConfigError, match="BatchNorm members of one ensemble must share 'batch_size'"):
        train([SMALL.replace(batchnorm=True, batch_size=b) for b in (8, 16)], progress=False)


def test_batchnorm_with_batches_of_one_trains():
    """With one example per batch the normalized value is 0 whatever the gain: the gain's gradient is 0,
    not an error (autograd's 'unused tensor')."""
    run = train(SMALL.replace(batchnorm=True, batch_size=1, steps=10, eval_every=5), progress=False)
    assert np.isfinite(run.summary.train_loss[0]) and run.diverged_step(0) is None
    torch.testing.assert_close(run.params["gain0"], torch.ones_like(run.params["gain0"]))


def test_64_mnist1d_configs_train_in_under_2_gb():
    """A 64-config sweep fits a laptop: 64 MNIST-1D MLP configs (40-100-100-10, B = 32) as one ensemble, evaluations on
    both splits included, peak resident memory of a fresh process (torch itself included) < 2 GiB."""
    code = textwrap.dedent("""
        import resource, reglab
        configs = [reglab.RunConfig(data="mnist1d", width=100, depth=2, step_size=0.01 * 1.05 ** i, batch_size=32,
                                    steps=20, eval_every=10, seed=i) for i in range(64)]
        run = reglab.train(configs, progress=False)
        print(len(run.summary), int(run.summary.train_loss.notna().sum()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    members, finite, peak_kib = map(int, out[-3:])
    assert members == finite == 64
    assert peak_kib * 1024 < 2 * 1024 ** 3, f"peak {peak_kib / 1024:.0f} MiB"
