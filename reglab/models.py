"""Models as pure functions of stacked parameters.

Every parameter tensor has a leading member axis M: a single run is an ensemble of one, a sweep is an
ensemble of many, and the same code trains both (members never interact: their losses are summed,
so each member's gradient is its own). `init` builds the parameters from one torch.Generator per
member, so a member's numbers do not depend on which ensemble it is trained in.

    params = model.init(generators)          # dict name -> Tensor[M, ...]
    out = model(params, x)                   # x: [M, B, ...] (or [B, ...], shared) -> [M, B, out]
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

def identity(h):
    return h


ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu, "linear": identity}


def _uniform(generators, shape, bound, device, dtype):
    """PyTorch's nn.Linear default init, U(-bound, bound), drawn per member from its own generator."""
    return torch.stack([(torch.rand(shape, generator=g) * 2 - 1) * bound for g in generators]).to(device, dtype)


def _shared_or_member(x, params_leading):
    """Inputs shared by all members ([B, ...]) broadcast against per-member ones ([M, B, ...])."""
    return x if x.dim() == params_leading else x.unsqueeze(0)


class MLP:
    """x → [Linear → (BatchNorm) → activation] × depth → Linear.

    `rank` factorizes weight matrix `rank_layer` as U Vᵀ (U: in×r, V: r×out). With `center_output`
    the model returns output_scale·(f(x) − f₀(x)), f₀ the network at initialization (lazy-training
    trick of Chizat & Bach); the loss should then be divided by output_scale².
    """

    def __init__(self, input_dim, output_dim, width=100, depth=2, activation="relu", rank=None, rank_layer=None,
                 bias=True, batchnorm=False, output_scale=1.0, center_output=False):
        self.dims = [input_dim] + [width] * depth + [output_dim]
        self.act = ACTIVATIONS[activation]
        self.rank, self.rank_layer = rank, (min(1, depth) if rank_layer is None else rank_layer)
        self.bias, self.batchnorm = bias, batchnorm
        self.output_scale, self.center_output = output_scale, center_output
        self.initial = None  # parameters at init, kept when the output is centered

    def init(self, generators, device="cpu", dtype=torch.float32) -> dict:
        p = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            bound = 1 / math.sqrt(fan_in)
            if self.rank is not None and i == self.rank_layer:
                # U Vᵀ with the same scale of outputs as a dense layer: U ~ U(±1/√in), V ~ U(±1/√r)
                p[f"U{i}"] = _uniform(generators, (fan_in, self.rank), bound, device, dtype)
                p[f"V{i}"] = _uniform(generators, (self.rank, fan_out), 1 / math.sqrt(self.rank), device, dtype)
            else:
                p[f"W{i}"] = _uniform(generators, (fan_in, fan_out), bound, device, dtype)
            if self.bias:
                p[f"b{i}"] = _uniform(generators, (fan_out,), bound, device, dtype)
            if self.batchnorm and i < len(self.dims) - 2:
                p[f"gain{i}"] = torch.ones(len(generators), fan_out, device=device, dtype=dtype)
                p[f"shift{i}"] = torch.zeros(len(generators), fan_out, device=device, dtype=dtype)
        if self.center_output:
            self.initial = {k: v.detach().clone() for k, v in p.items()}
        return p

    def weight(self, params, i):
        """The (possibly factorized) weight matrix of layer i, [M, in, out]."""
        return params[f"W{i}"] if f"W{i}" in params else params[f"U{i}"] @ params[f"V{i}"]

    def _layer(self, params, i, h):
        bias = params.get(f"b{i}")
        if f"W{i}" in params:
            w = params[f"W{i}"]
        else:
            h, w = h @ params[f"U{i}"], params[f"V{i}"]  # never forms U Vᵀ: cheaper for small r
        if bias is None:
            return h @ w
        if h.dim() == 2 or h.shape[0] != w.shape[0]:  # inputs shared by all members
            h = h.expand(w.shape[0], *h.shape[-2:])
        return torch.baddbmm(bias.unsqueeze(-2), h, w)  # bias add fused into the batched matmul

    def features(self, params, x) -> list:
        """Post-activation hidden representations of every hidden layer, each [M, B, width]."""
        h = _shared_or_member(x, 3)
        feats = []
        for i in range(len(self.dims) - 2):
            h = self._layer(params, i, h)
            if self.batchnorm:  # batch statistics of the batch at hand (train and evaluation alike)
                h = self._batchnorm(h, params[f"gain{i}"], params[f"shift{i}"])
            h = self.act(h)
            feats.append(h)
        return feats

    @staticmethod
    def _batchnorm(h, gain, shift):
        """Per-member batch norm: the members' features side by side as one [B, M·d] batch, so PyTorch's
        fused kernel normalizes every member at once (2.8× faster than composing it from means)."""
        M, B, d = h.shape
        if B == 1:  # F.batch_norm refuses a batch of one; the normalized value is 0 either way
            return shift.unsqueeze(-2).expand(M, 1, d) + 0 * h
        flat = h.transpose(0, 1).reshape(B, M * d)
        out = F.batch_norm(flat, None, None, gain.reshape(-1), shift.reshape(-1), training=True, eps=1e-5)
        return out.reshape(B, M, d).transpose(0, 1)

    def _raw(self, params, x):
        feats = self.features(params, x)
        h = feats[-1] if feats else _shared_or_member(x, 3)
        return self._layer(params, len(self.dims) - 2, h)

    def __call__(self, params, x):
        out = self._raw(params, x)
        if self.center_output:
            out = self.output_scale * (out - self._raw(self.initial, x).detach())
        elif self.output_scale != 1.0:
            out = self.output_scale * out
        return out

    def decay_mask(self, params, decay_biases=False) -> dict:
        """nanoGPT's policy, made explicit: weight matrices decay; biases and BatchNorm gains only if asked."""
        return {k: (k[0] in "WUV") or decay_biases for k in params}


class Bigram:
    """Token → embedding (d = width) → unembedding: logits = E[x] @ Wᵀ, the smallest language model."""

    def __init__(self, vocab, width=32, bias=False, **_):
        self.vocab, self.width, self.bias = vocab, width, bias

    def init(self, generators, device="cpu", dtype=torch.float32) -> dict:
        p = {"embed": torch.stack([torch.randn(self.vocab, self.width, generator=g) for g in generators]).to(device, dtype),
             "unembed": _uniform(generators, (self.vocab, self.width), 1 / math.sqrt(self.width), device, dtype)}
        if self.bias:
            p["b"] = torch.zeros(len(generators), self.vocab, device=device, dtype=dtype)
        return p

    def features(self, params, x) -> list:
        members = torch.arange(params["embed"].shape[0], device=x.device)
        idx = x if x.dim() == 2 else x.unsqueeze(0).expand(len(members), -1)
        return [params["embed"][members[:, None], idx]]

    def __call__(self, params, x):
        logits = self.features(params, x)[0] @ params["unembed"].transpose(-1, -2)
        return logits + params["b"].unsqueeze(-2) if "b" in params else logits

    def decay_mask(self, params, decay_biases=False) -> dict:
        return {k: k != "b" or decay_biases for k in params}


def build_model(config, data):
    """The model a RunConfig describes, sized for `data`."""
    if config.model == "bigram":
        return Bigram(data.info["vocab"], width=config.width, bias=config.bias)
    return MLP(data.input_dim, data.output_dim, width=config.width, depth=config.depth, activation=config.activation,
               rank=config.rank, rank_layer=config.rank_layer, bias=config.bias, batchnorm=config.batchnorm,
               output_scale=config.output_scale, center_output=config.center_output)
