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

from .config import ConfigError


def identity(h):
    return h


# relu and tanh in place: every input they get is a layer's fresh output, which no backward needs (tanh's
# backward keeps its own output), and a fresh activation-sized tensor costs page faults of its own
ACTIVATIONS = {"relu": torch.relu_, "tanh": torch.tanh_, "gelu": F.gelu, "linear": identity}


def _uniform(generators, shape, bound, device, dtype):
    """PyTorch's nn.Linear default init, U(-bound, bound), drawn per member from its own generator."""
    return torch.stack([(torch.rand(shape, generator=g) * 2 - 1) * bound for g in generators]).to(device, dtype)


def _normal(generators, shape, std, device, dtype):
    """N(0, std²) entries, drawn per member from its own generator."""
    return torch.stack([torch.randn(shape, generator=g) * std for g in generators]).to(device, dtype)


class MLP:
    """x → [Linear → (BatchNorm) → activation] × depth → Linear, every member at once.

    Weights are stored in the math orientation, W{i}: [M, in, out], so each layer reads as the
    textbook `h = act(h @ W + b)` with a batched matmul over members; autograd does the backward pass.

    `rank` factorizes weight matrix `rank_layer` as W = U V (U: in×r, V: r×out). With `center_output`
    the model returns output_scale·(f(x) − f₀(x)), f₀ the network at initialization (lazy-training
    trick of Chizat & Bach); the loss should then be divided by output_scale². `init_std` draws every
    weight and bias from N(0, init_std²) instead of PyTorch's uniform default. `ghost_batch` takes the
    BatchNorm statistics over consecutive ghost batches of that size (Hoffer et al. 2017) wherever it
    divides the batch at hand.
    """

    def __init__(self, input_dim, output_dim, width=100, depth=2, activation="relu", rank=None, rank_layer=None,
                 bias=True, batchnorm=False, output_scale=1.0, center_output=False, init_std=None, ghost_batch=None):
        self.width, self.dims = width, [input_dim] + [width] * depth + [output_dim]
        self.activation, self.act = activation, ACTIVATIONS[activation]
        self.rank, self.rank_layer = rank, (min(1, depth) if rank_layer is None else rank_layer)
        self.bias, self.batchnorm = bias, batchnorm
        self.output_scale, self.center_output = output_scale, center_output
        self.init_std, self.ghost_batch = init_std, ghost_batch
        self.initial = None  # parameters at init, kept when the output is centered

    def init(self, generators, device="cpu", dtype=torch.float32) -> dict:
        p = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            bound = 1 / math.sqrt(fan_in)
            draw = ((lambda shape, b: _normal(generators, shape, self.init_std, device, dtype)) if self.init_std
                    else (lambda shape, b: _uniform(generators, shape, b, device, dtype)))
            if self.rank is not None and i == self.rank_layer:
                # U V with the same scale of outputs as a dense layer: U ~ U(±1/√in), V ~ U(±1/√r)
                p[f"U{i}"] = draw((fan_in, self.rank), bound)
                p[f"V{i}"] = draw((self.rank, fan_out), 1 / math.sqrt(self.rank))
            else:
                p[f"W{i}"] = draw((fan_in, fan_out), bound)
            if self.bias:
                p[f"b{i}"] = draw((fan_out,), bound)
            if self.batchnorm and i < len(self.dims) - 2:
                p[f"gain{i}"] = torch.ones(len(generators), fan_out, device=device, dtype=dtype)
                p[f"shift{i}"] = torch.zeros(len(generators), fan_out, device=device, dtype=dtype)
        if self.center_output:
            self.initial = {k: v.detach().clone() for k, v in p.items()}
        return p

    def weight(self, params, i):
        """The (possibly factorized) weight matrix of layer i, [M, in, out] (y = x W)."""
        return params[f"W{i}"] if f"W{i}" in params else params[f"U{i}"] @ params[f"V{i}"]

    def _linear(self, params, i, h):
        """Layer i: h [M, B, in] (or [B, in], shared by every member) → [M, B, out]: h @ W + b, the bias
        added inside the batched matmul (baddbmm)."""
        if f"U{i}" in params:
            h, w = h @ params[f"U{i}"], params[f"V{i}"]  # never forms U V: cheaper for small r
        else:
            w = params[f"W{i}"]
        if h.dim() == 2:
            h = h.expand(w.shape[0], *h.shape)
        b = params.get(f"b{i}")
        return torch.bmm(h, w) if b is None else torch.baddbmm(b.unsqueeze(1), h, w)

    def _batchnorm(self, h, gain, shift):
        """Each member's features normalized over its batch (or over each ghost batch of it): F.batch_norm
        on [g, M·k·d], every (member, ghost batch, feature) a channel. A batch of one normalizes to 0,
        leaving the shift."""
        M, B, d = h.shape
        if B == 1:
            return shift.unsqueeze(1) + 0 * h * gain.unsqueeze(1)
        g = self.ghost_batch if self.ghost_batch and B > self.ghost_batch and B % self.ghost_batch == 0 else B
        k = B // g
        flat = h.reshape(M, k, g, d).permute(2, 0, 1, 3).reshape(g, M * k * d)
        expand = lambda t: t.unsqueeze(1).expand(M, k, d).reshape(-1)
        out = F.batch_norm(flat, None, None, expand(gain), expand(shift), training=True)
        return out.view(g, M, k, d).permute(1, 2, 0, 3).reshape(M, B, d)

    def _hidden(self, params, x) -> list:
        h, hidden = x, []
        for i in range(len(self.dims) - 2):
            h = self._linear(params, i, h)
            if self.batchnorm:  # batch statistics of the batch at hand (train and evaluation alike)
                h = self._batchnorm(h, params[f"gain{i}"], params[f"shift{i}"])
            h = self.act(h)
            hidden.append(h)
        return hidden

    def features(self, params, x) -> list:
        """Post-activation hidden representations of every hidden layer, each [M, B, width]."""
        return self._hidden(params, x)

    def _readout(self, params, x, hidden):
        return self._linear(params, len(self.dims) - 2, hidden[-1] if hidden else x)

    def forward(self, params, x):
        """(outputs [M, B, out], hidden features as `features` gives them) from one pass."""
        hidden = self._hidden(params, x)
        out = self._readout(params, x, hidden)
        if self.center_output:  # α·(f − f₀): f₀ is a constant of the data, with no gradient
            with torch.no_grad():
                out0 = self._readout(self.initial, x, self._hidden(self.initial, x))
            out = out - out0
        return (out if self.output_scale == 1.0 else self.output_scale * out), hidden

    def __call__(self, params, x):
        return self.forward(params, x)[0]

    def decay_mask(self, params, decay_biases=False) -> dict:
        """nanoGPT's policy, made explicit: weight matrices decay; biases and BatchNorm gains only if asked."""
        return {k: (k[0] in "WUV") or decay_biases for k in params}


class Bigram:
    """Token → embedding (d = width) → unembedding: logits = E[x] @ Wᵀ, the smallest language model."""

    def __init__(self, vocab, width=32, bias=False, **_):
        self.vocab, self.width, self.bias = vocab, width, bias

    def init(self, generators, device="cpu", dtype=torch.float32) -> dict:
        p = {"embed": _normal(generators, (self.vocab, self.width), 1.0, device, dtype),
             "unembed": _uniform(generators, (self.vocab, self.width), 1 / math.sqrt(self.width), device, dtype)}
        if self.bias:
            p["b"] = torch.zeros(len(generators), self.vocab, device=device, dtype=dtype)
        return p

    def features(self, params, x) -> list:
        members = torch.arange(params["embed"].shape[0], device=x.device)
        idx = x if x.dim() == 2 else x.unsqueeze(0).expand(len(members), -1)
        return [params["embed"][members[:, None], idx]]

    def forward(self, params, x):
        """(logits [M, B, vocab], [embeddings]) from one pass."""
        feats = self.features(params, x)
        logits = feats[0] @ params["unembed"].transpose(-1, -2)
        return (logits + params["b"].unsqueeze(-2) if "b" in params else logits), feats

    def __call__(self, params, x):
        return self.forward(params, x)[0]

    def decay_mask(self, params, decay_biases=False) -> dict:
        return {k: k != "b" or decay_biases for k in params}


class Transformer:
    """Windows of T token ids → logits of the next token: a decoder-only transformer, nanoGPT's recipe in
    pure functions. Token + learned position embeddings → [pre-LayerNorm causal self-attention, pre-LayerNorm
    MLP (4 × width)], each added to the residual stream, × depth → LayerNorm → unembedding, last position.

    x: [B, T] (shared by all members) or [M, B, T] ids with T ≤ context; output [M, B, vocab]. Matrices are
    [M, in, out] (h @ W), named by block: `attn_qkv0` is block 0's query-key-value map [M, width, 3·width],
    `attn_qkv0_bias` its bias, `ln_mlp1_gain` block 1's pre-MLP LayerNorm gain. `bias` switches the linear
    maps' biases and the LayerNorms' shifts together (nanoGPT's switch).
    """

    def __init__(self, vocab, context, width=64, depth=2, heads=1, activation="gelu", bias=True, qk_layernorm=False,
                 **_):
        # depth, heads and rank are checked with the rest of the config (config.validate)
        self.vocab, self.context, self.width, self.depth, self.heads = vocab, context, width, depth, heads
        self.act, self.bias, self.qk_layernorm = ACTIVATIONS[activation], bias, qk_layernorm

    def init(self, generators, device="cpu", dtype=torch.float32) -> dict:
        d, M = self.width, len(generators)
        normal = lambda *shape, std=0.02: _normal(generators, shape, std, device, dtype)  # GPT-2's init
        residual = 0.02 / math.sqrt(2 * self.depth)  # for the 2·depth maps that add into the residual stream
        p = {"embed": normal(self.vocab, d), "position": normal(self.context, d)}
        for i in range(self.depth):
            p |= {f"attn_qkv{i}": normal(d, 3 * d), f"attn_out{i}": normal(d, d, std=residual),
                  f"mlp_in{i}": normal(d, 4 * d), f"mlp_out{i}": normal(4 * d, d, std=residual)}
        linears = [k for k in p if k[-1].isdigit()]
        norms = [f"ln_{part}{i}" for i in range(self.depth) for part in ("attn", "mlp")] + ["ln_final"]
        p |= {f"{k}_gain": torch.ones(M, d, device=device, dtype=dtype) for k in norms}
        if self.bias:  # zero biases and LayerNorm shifts
            p |= {f"{k}_bias": torch.zeros(M, p[k].shape[-1], device=device, dtype=dtype) for k in linears}
            p |= {f"{k}_shift": torch.zeros(M, d, device=device, dtype=dtype) for k in norms}
        p["unembed"] = normal(self.vocab, d)
        return p

    @staticmethod
    def _linear(params, name, h):
        """h [M, B, T, in] @ params[name] [M, in, out] (+ its bias) as one batched matmul over members."""
        M, B, T, _ = h.shape
        w, b = params[name], params.get(f"{name}_bias")
        flat = h.reshape(M, B * T, -1)
        out = flat @ w if b is None else torch.baddbmm(b.unsqueeze(-2), flat, w)
        return out.view(M, B, T, -1)

    @staticmethod
    def _layer_norm(params, name, h):
        """LayerNorm over features without its own affine map, then each member's gain (and shift)."""
        h = F.layer_norm(h, h.shape[-1:]) * params[f"{name}_gain"][:, None, None]
        shift = params.get(f"{name}_shift")
        return h if shift is None else h + shift[:, None, None]

    def _qkv(self, params, i, h):
        """Queries, keys and values of block i, each [M·B, H, T, d/H]. With qk_layernorm, each head's queries
        and keys are layer-normalized (Wortsman et al. 2023)."""
        M, B, T, d = h.shape
        qkv = self._linear(params, f"attn_qkv{i}", h)
        q, k, v = (t.reshape(M * B, T, self.heads, d // self.heads).transpose(1, 2) for t in qkv.split(d, dim=-1))
        if self.qk_layernorm:
            q, k = F.layer_norm(q, q.shape[-1:]), F.layer_norm(k, k.shape[-1:])
        return q, k, v

    @staticmethod
    def _logits(q, k):
        """Attention logits q·kᵀ/√(d/H) of the last Q positions' queries q [..., Q, d/H] against the keys of all T
        positions k [..., T, d/H]: [..., Q, T], entries after each query's position (causal mask) −inf."""
        Q, T = q.shape[-2], k.shape[-2]
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()[T - Q:]
        return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~causal, float("-inf"))

    def _scores(self, params, i, h, queries):
        """Attention logits of block i for the last `queries` positions, [M·B, H, queries, T], and the values."""
        q, k, v = self._qkv(params, i, h)
        return self._logits(q[:, :, -queries:], k), v

    def _attention(self, params, i, h, queries):
        """Causal multi-head self-attention, written out: each of the last `queries` positions attends to
        itself and every earlier position. h: [M, B, T, width] → [M, B, queries, width]."""
        M, B, T, d = h.shape
        scores, v = self._scores(params, i, h, queries)
        mixed = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(M, B, queries, d)
        return self._linear(params, f"attn_out{i}", mixed)

    def queries_and_keys(self, params, x) -> list:
        """Every block's queries and keys on inputs x (after qk-layernorm when it is on), each a pair of
        [M, B, heads, T, d/heads] tensors."""
        M, T = params["embed"].shape[0], x.shape[-1]
        members = torch.arange(M, device=x.device).view(M, 1, 1)
        ids = x.expand(M, *x.shape) if x.dim() == 2 else x
        h, out = params["embed"][members, ids] + params["position"][:, None, :T], []
        for i in range(self.depth):
            a = self._layer_norm(params, f"ln_attn{i}", h)
            q, k, _ = self._qkv(params, i, a)
            out.append((q.view(M, -1, *q.shape[1:]), k.view(M, -1, *k.shape[1:])))
            h = h + self._attention(params, i, a, T)
            h = h + self._mlp(params, i, self._layer_norm(params, f"ln_mlp{i}", h))
        return out

    def attention_logits(self, params, x) -> list:
        """Every block's attention logits q·kᵀ/√(d/heads) on inputs x, each [M, B, heads, T, T] (masked entries
        −inf): what grows without bound in an unstable run (the max attention logit of Wortsman et al.)."""
        return [self._logits(q, k) for q, k in self.queries_and_keys(params, x)]

    def _mlp(self, params, i, h):
        return self._linear(params, f"mlp_out{i}", self.act(self._linear(params, f"mlp_in{i}", h)))

    def residual_streams(self, params, x, every_position=True) -> list:
        """The residual stream after every block, each [M, B, T, width]. Without `every_position` the last
        block computes only the last position, [M, B, 1, width]: all a prediction needs, and ~40 % less work
        at depth 2."""
        M, T = params["embed"].shape[0], x.shape[-1]
        members = torch.arange(M, device=x.device).view(M, 1, 1)
        ids = x.expand(M, *x.shape) if x.dim() == 2 else x
        h = params["embed"][members, ids] + params["position"][:, None, :T]
        streams = []
        for i in range(self.depth):
            queries = T if every_position or i < self.depth - 1 else 1
            h = h[:, :, T - queries:] + self._attention(params, i, self._layer_norm(params, f"ln_attn{i}", h), queries)
            h = h + self._mlp(params, i, self._layer_norm(params, f"ln_mlp{i}", h))
            streams.append(h)
        return streams

    def features(self, params, x) -> list:
        """The residual stream after every block at the last position, each [M, B, width]."""
        return [h[:, :, -1] for h in self.residual_streams(params, x, every_position=False)]

    def forward(self, params, x):
        """(logits [M, B, vocab], the features above) from one pass."""
        streams = self.residual_streams(params, x, every_position=False)  # the last one is [M, B, 1, width]
        h = self._layer_norm(params, "ln_final", streams[-1])[:, :, 0]
        return h @ params["unembed"].transpose(-1, -2), [h[:, :, -1] for h in streams]

    def __call__(self, params, x):
        return self.forward(params, x)[0]

    def decay_mask(self, params, decay_biases=False) -> dict:
        """nanoGPT's rule: embeddings and weight matrices (≥ 2 dims per member) decay; biases and LayerNorm
        gains and shifts only if asked."""
        return {k: p.dim() > 2 or decay_biases for k, p in params.items()}


def build_model(config, data):
    """The model a RunConfig describes, sized for `data`."""
    if config.model == "bigram":
        return Bigram(data.info["vocab"], width=config.width, bias=config.bias)
    if config.model == "transformer":
        if data.x_train.dim() != 2 or data.x_train.is_floating_point() or "vocab" not in data.info:
            raise ConfigError(f"model='transformer' reads windows of token ids [n, context] (data='zipf_sequences'); "
                              f"data '{data.name}' has inputs of shape {tuple(data.x_train.shape)}.")
        return Transformer(data.info["vocab"], data.x_train.shape[1], width=config.width, depth=config.depth,
                           heads=config.heads, activation=config.activation, bias=config.bias,
                           qk_layernorm=config.qk_layernorm)
    return MLP(data.input_dim, data.output_dim, width=config.width, depth=config.depth, activation=config.activation,
               rank=config.rank, rank_layer=config.rank_layer, bias=config.bias, batchnorm=config.batchnorm,
               output_scale=config.output_scale, center_output=config.center_output, init_std=config.init_std,
               ghost_batch=config.ghost_batch)
