"""The optimizer chains and the MLP against plain PyTorch: same initial weights, same full-batch steps
with torch.optim, same final weights."""
import pytest
import torch

from reglab import RunConfig, make_dataset, train
from reglab.models import build_model

STEPS = 25


def _reference(cfg: RunConfig, data, make_optimizer):
    """nn.Sequential with reglab's initial weights (reglab stores W as [in, out], nn.Linear as [out, in])
    trained by torch.optim."""
    model = build_model(cfg, data)
    params = model.init([torch.Generator().manual_seed(cfg.seed)])
    layers = []
    for i in range(cfg.depth + 1):
        linear = torch.nn.Linear(*params[f"W{i}"].shape[1:])
        with torch.no_grad():
            linear.weight.copy_(params[f"W{i}"][0].T)
            linear.bias.copy_(params[f"b{i}"][0])
        layers += [linear, torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    opt = make_optimizer(net.parameters())
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(data.x_train), data.y_train).backward()
        opt.step()
    return net


@pytest.mark.parametrize("name, changes, make_optimizer", [
    ("sgd", dict(step_size=0.2), lambda p: torch.optim.SGD(p, lr=0.2)),
    ("momentum + coupled L2", dict(step_size=0.1, momentum=0.9, weight_decay=1e-2, decay="coupled", decay_biases=True),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2)),
    ("adamw", dict(optimizer="adamw", step_size=1e-2, weight_decay=0.1, decay="decoupled", decay_biases=True),
     lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, eps=1e-8)),
])
def test_chain_matches_torch_optim(name, changes, make_optimizer):
    data = make_dataset("digits", n_train=200)
    cfg = RunConfig(data="digits", n_train=200, width=16, depth=2, activation="tanh", steps=STEPS, eval_every=STEPS,
                    seed=3, device="cpu", **changes)
    ours = train(cfg, data, progress=False)
    net = _reference(cfg, data, make_optimizer)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    for i, linear in enumerate(linears):
        torch.testing.assert_close(ours.params[f"W{i}"][0], linear.weight.detach().T, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.params[f"b{i}"][0], linear.bias.detach(), rtol=1e-4, atol=1e-5)
    moved = (ours.params["W0"][0] - build_model(cfg, data).init([torch.Generator().manual_seed(3)])["W0"][0]).norm()
    assert moved > 1e-3  # the comparison is of trained weights, not of the initialization


def test_shared_and_per_member_inputs_give_the_same_outputs():
    """Full-batch inputs ([B, in], shared by the ensemble) and gathered ones ([M, B, in]) agree."""
    data = make_dataset("digits", n_train=100)
    for changes in (dict(), dict(batchnorm=True), dict(rank=3, rank_layer=0)):
        cfg = RunConfig(data="digits", n_train=100, width=8, depth=2, **changes)
        model = build_model(cfg, data)
        params = model.init([torch.Generator().manual_seed(s) for s in range(3)])
        shared = model(params, data.x_train)
        gathered = model(params, data.x_train.expand(3, *data.x_train.shape))
        assert shared.shape == (3, 100, 10)
        torch.testing.assert_close(shared, gathered, rtol=1e-5, atol=1e-5)


def test_links_that_work_in_place_keep_their_state_apart():
    """Momentum then decoupled decay: the decay added to this step's direction must not leak into the
    momentum buffer (links update the gradients they are handed in place)."""
    from reglab import transforms as T

    g = torch.Generator().manual_seed(0)
    params = {"W": torch.randn(2, 3, 4, generator=g), "b": torch.randn(2, 3, generator=g)}
    beta, lam = torch.tensor([0.9, 0.5]), torch.tensor([0.1, 0.0])
    opt = T.chain(T.momentum(beta), T.add_decayed_weights(lam, {"W": True, "b": False}))
    state = opt.init(params)
    buf = {k: torch.zeros_like(p) for k, p in params.items()}
    for _ in range(4):
        grads = {k: torch.randn(p.shape, generator=g) for k, p in params.items()}
        expected = {}
        for k, p in params.items():
            buf[k] = T.per_member(beta, p) * buf[k] + grads[k]
            expected[k] = buf[k] + (T.per_member(lam, p) * p if k == "W" else 0)
        directions, state = opt.update({k: v.clone() for k, v in grads.items()}, state, params)
        for k in params:
            torch.testing.assert_close(directions[k], expected[k])
