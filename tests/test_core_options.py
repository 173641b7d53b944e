"""Core options the themes build on: Gaussian init, Adam's ε, ghost batches, qk-layernorm, z-loss, warm-up,
step-size-independent weight decay, the lag-2 Markov task and the separable slab."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reglab import ConfigError, RunConfig, make_dataset, train, validate
from reglab import transforms as T
from reglab.models import build_model

DIGITS = RunConfig(data="digits", n_train=256, width=16, depth=1, steps=1, eval_every=1)
SEQ = RunConfig(data="lag2_markov", n_train=256, data_options={"vocab": 8, "context": 6, "n_test": 64},
                model="transformer", width=16, depth=1, heads=2, optimizer="adamw", step_size=1e-2, steps=5, eval_every=5)


def test_gaussian_init_draws_weights_and_biases_from_the_given_std():
    data = make_dataset("digits", 256)
    params = build_model(DIGITS.replace(init_std=0.3, width=400), data).init([torch.Generator().manual_seed(0)])
    for name in ("W0", "b0", "W1"):
        assert abs(float(params[name].std()) - 0.3) < 0.03, name
    assert abs(float(params["W0"].mean())) < 0.01


@pytest.mark.parametrize("ghost", [32, 8])
def test_ghost_batch_norm(ghost):
    data = make_dataset("digits", 256)
    cfg = DIGITS.replace(batchnorm=True, batch_size=32)
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(2)]
    plain, ghosted = build_model(cfg, data), build_model(cfg.replace(ghost_batch=ghost), data)
    params = plain.init(gens())
    x = data.x_train[:32]
    if ghost == 32:  # a ghost batch as large as the batch is ordinary BatchNorm
        torch.testing.assert_close(ghosted(params, x), plain(params, x))
    else:  # each ghost batch normalized on its own: the same as running the pieces separately
        pieces = torch.cat([plain(params, x[i:i + ghost]) for i in range(0, 32, ghost)], 1)
        torch.testing.assert_close(ghosted(params, x), pieces)
        assert not torch.allclose(ghosted(params, x), plain(params, x))


def test_ghost_batch_must_divide_the_batch_and_needs_batchnorm():
    with pytest.raises(ConfigError, match="'ghost_batch'.*divide the batch size \\(32\\)"):
        validate(DIGITS.replace(batchnorm=True, batch_size=32, ghost_batch=12))
    with pytest.raises(ConfigError, match="'ghost_batch'.*batchnorm=True"):
        validate(DIGITS.replace(batch_size=32, ghost_batch=8))


def test_qk_layernorm_off_is_plain_attention_and_on_bounds_the_logits():
    data = make_dataset("lag2_markov", 256, vocab=8, context=6, n_test=64)
    model = build_model(SEQ, data)
    params = model.init([torch.Generator().manual_seed(0)])
    params = {k: v * 300 if k.startswith("attn_qkv") else v for k, v in params.items()}  # huge logits
    x = data.x_train[:4]
    logits = model.attention_logits(params, x)[0]  # [M, B, H, T, T]
    h = F.layer_norm(params["embed"][0, x] + params["position"][0, :6], (16,)) * params["ln_attn0_gain"][0]
    h = h + params["ln_attn0_shift"][0]
    q, k, _ = (h @ params["attn_qkv0"][0] + params["attn_qkv0_bias"][0]).split(16, -1)
    q, k = (t.view(4, 6, 2, 8).transpose(1, 2) for t in (q, k))
    want = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), -math.inf)
    torch.testing.assert_close(logits[0], want, rtol=1e-4, atol=1e-1)
    assert logits[0].nan_to_num(neginf=0).abs().max() > 100
    normed = build_model(SEQ.replace(qk_layernorm=True), data).attention_logits(params, x)[0]
    assert normed.nan_to_num(neginf=0).abs().max() <= math.sqrt(8) + 1e-4  # |q̂·k̂| ≤ d_head, over √d_head


def test_z_loss_zero_is_cross_entropy_and_adds_log_z_squared():
    from reglab.engine import value_and_grad

    data = make_dataset("lag2_markov", 256, vocab=8, context=6, n_test=64)
    model = build_model(SEQ, data)
    params = {k: v.requires_grad_() for k, v in model.init([torch.Generator().manual_seed(0)]).items()}
    x, y = data.x_train[:16], data.y_train[:16]
    plain, _ = value_and_grad(model, params, x, y, "ce", None)
    zero, _ = value_and_grad(model, params, x, y, "ce", None, z_loss=0.0)
    out = model(params, x).detach()
    want = F.cross_entropy(out[0], y) + 1e-2 * torch.logsumexp(out[0], -1).pow(2).mean()
    with_z, _ = value_and_grad(model, params, x, y, "ce", None, z_loss=1e-2)
    assert torch.equal(plain, zero)
    torch.testing.assert_close(with_z[0], want)


def test_warmup_then_cosine():
    f = T.schedule("cosine", 100, warmup=10)
    assert [f(t) for t in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert f(10) == 1.0 and abs(f(55) - 0.5) < 1e-12 and abs(f(100)) < 1e-12
    assert T.schedule("constant", 100)(50) == 1.0


def test_independent_weight_decay_does_not_scale_with_the_step_size():
    base = DIGITS.replace(weight_decay=0.1, decay="independent", optimizer="sgd", steps=1)
    for eta in (0.01, 0.5):
        with_decay = train(base.replace(step_size=eta), progress=False).params["W0"]
        without = train(base.replace(step_size=eta, weight_decay=0.0), progress=False).params["W0"]
        start = build_model(base, make_dataset("digits", 256)).init([torch.Generator().manual_seed(0)])["W0"]
        torch.testing.assert_close(without - with_decay, 0.1 * start, rtol=1e-4, atol=1e-6)


def test_adam_eps_reaches_the_optimizer():
    net_eps = lambda eps: train(DIGITS.replace(optimizer="adamw", step_size=1e-2, steps=3, adam_eps=eps),
                                progress=False).params["W0"]
    assert not torch.allclose(net_eps(1e-8), net_eps(1.0))
    with pytest.raises(ConfigError, match="'adam_eps'"):
        validate(DIGITS.replace(adam_eps=0.0))


def test_lag2_markov_targets_depend_on_the_token_two_back():
    data = make_dataset("lag2_markov", 20000, vocab=6, context=8, n_test=20000, alpha=0.3)
    P = data.info["transition"]
    assert abs(data.info["bayes_loss"] - data.info["entropy_rate"]) < 0.03
    x, y = data.x_train.numpy(), data.y_train.numpy()
    a = 2
    rows = x[:, -2] == a
    empirical = np.bincount(y[rows], minlength=6) / rows.sum()
    assert np.abs(empirical - P[a]).max() < 0.05


def test_separable_slab_puts_every_point_in_the_slab():
    data = make_dataset("separable", 40, d=5, margin=0.05, slab=0.05, n_test=100)
    w = data.info["w_star"]
    proj = data.x_train @ w
    assert (proj.abs() >= 0.05 - 1e-6).all() and (proj.abs() <= 0.1 + 1e-6).all()
    assert torch.equal(torch.sign(proj), data.y_train[:, 0])


def test_orthogonal_grad_is_orthogonal_to_the_weights_and_keeps_the_gradient_norm():
    g = torch.Generator().manual_seed(0)
    params = {"W0": torch.randn(2, 5, 3, generator=g), "b0": torch.randn(2, 3, generator=g)}
    grads = {k: torch.randn(v.shape, generator=g) for k, v in params.items()}
    out, _ = T.orthogonal_to_weights().update({k: v.clone() for k, v in grads.items()}, None, params)
    for k in params:  # per tensor and member: ⟨g⊥, w⟩ = 0 and ‖g⊥‖ = ‖g‖ (Prieto et al.'s rescaling)
        dot = (out[k] * params[k]).flatten(1).sum(1)
        torch.testing.assert_close(dot, torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[k].flatten(1).norm(dim=1), grads[k].flatten(1).norm(dim=1))
        direction = grads[k] - (grads[k] * params[k]).flatten(1).sum(1).view(-1, *[1] * (params[k].dim() - 1)) \
            / params[k].flatten(1).pow(2).sum(1).view(-1, *[1] * (params[k].dim() - 1)) * params[k]
        cos = F.cosine_similarity(out[k].flatten(1), direction.flatten(1), dim=1)
        torch.testing.assert_close(cos, torch.ones(2))
    zero = {"b": torch.zeros(1, 4)}  # zero weights: nothing to remove, the gradient passes unchanged
    same, _ = T.orthogonal_to_weights().update({"b": torch.ones(1, 4)}, None, zero)
    torch.testing.assert_close(same["b"], torch.ones(1, 4))


def test_stablemax_cross_entropy_is_computed_in_float64():
    from reglab.losses import stablemax, stablemax_cross_entropy

    # s(1e8) = 1e8 + 1 and s(0) = 1: in float32 both sums round to 1e8, p_y to exactly 1, the loss to 0
    z = torch.tensor([[[1e8, 0.0]]], requires_grad=True)
    s32 = stablemax(z.detach())
    assert -torch.log(s32[..., 0] / s32.sum(-1)).item() == 0.0
    loss = stablemax_cross_entropy(z, torch.tensor([0]))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(1 / (1e8 + 2), rel=1e-6)
    loss.sum().backward()
    assert z.grad.dtype == torch.float32 and z.grad[0, 0, 0].item() < 0  # float64: −1/(1e8+1) + 1/(1e8+2)
