"""A slow, loop-by-loop numpy reference of the Transformer-XL / XLNet stack (tests only).

Every attention score is computed from its definition (content + position of distance
`i - j` (+ segment) terms), one query and one key at a time, with no rel-shift trick, no masks
as tensors and no einsum over the sequence; float64. It reads protlm's unscanned param tree.
"""
from __future__ import annotations

import math

import numpy as np


def _ln(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _act(name, x):
    if name == "relu":
        return np.maximum(x, 0)
    from scipy.special import erf  # noqa: PLC0415

    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _sinusoid(dist, d):
    inv = 1.0 / (10000 ** (np.arange(0, d, 2) / d))
    return np.concatenate([np.sin(dist * inv), np.cos(dist * inv)])


def forward(params, cfg, tokens, *, see_h, see_g=None, targets=(), seg_ids=None,
            reverse=False):
    """One example. `see_h(i, j)` / `see_g(i, j)`: may query position i attend to key j.

    Returns (content stream last layer [q, d], query stream logits [len(targets), vocab]
    (two-stream) or content logits [q, vocab]).
    """
    p = {k: np.asarray(v, np.float64) if not isinstance(v, dict) else v for k, v in params.items()}
    emb = np.asarray(params["word_embedding"]["embedding"], np.float64)
    d, q = cfg.hidden_size, len(tokens)
    h = emb[np.asarray(tokens)] * cfg.embedding_scale
    g = np.tile(np.asarray(params["mask_emb"], np.float64), (len(targets), 1)) if targets else None
    sign = -1.0 if reverse else 1.0
    for layer in range(cfg.num_layers):
        lp = params[f"layers_{layer}"]
        a = {k: np.asarray(v, np.float64) for k, v in lp["attention"].items()
             if not isinstance(v, dict)}
        biases = a if cfg.untie_r else {k: np.asarray(p[k], np.float64)
                                        for k in ("r_w_bias", "r_r_bias", "r_s_bias") if k in p}
        wq, wk, wv, wr = (np.asarray(lp["attention"][n]["kernel"], np.float64)
                          for n in ("query", "key", "value", "pos"))
        wo = a["out"]
        keys = np.einsum("jh,hnd->jnd", h, wk)
        values = np.einsum("jh,hnd->jnd", h, wv)

        def attend(x_row, pos, allowed):
            qv = np.einsum("h,hnd->nd", x_row, wq)
            scores, vals = [], []
            for j in range(q):
                if not allowed(pos, j):
                    continue
                r = np.einsum("h,hnd->nd", _sinusoid(sign * (pos - j), d), wr)
                s = np.sum((qv + biases["r_w_bias"]) * keys[j], -1) + np.sum(
                    (qv + biases["r_r_bias"]) * r, -1)
                if cfg.segments:
                    diff = int(seg_ids[pos] != seg_ids[j])
                    s = s + np.sum((qv + biases["r_s_bias"]) * a["seg_embed"][diff], -1)
                scores.append(s / math.sqrt(cfg.head_dim))
                vals.append(values[j])
            scores = np.stack(scores)                     # [keys, heads]
            w = np.exp(scores - scores.max(0))
            w /= w.sum(0)
            ctx = np.einsum("jn,jnd->nd", w, np.stack(vals))
            return _ln(x_row + np.einsum("nd,hnd->h", ctx, wo),
                       {k: np.asarray(v, np.float64) for k, v in lp["attention"]["layer_norm"].items()},
                       cfg.layer_norm_eps)

        new_h = np.stack([attend(h[i], i, see_h) for i in range(q)])
        new_g = None if g is None else np.stack(
            [attend(g[m], t, see_g) for m, t in enumerate(targets)])

        def ff(x):
            f = lp["ff"]
            wi, wo2 = f["mlp"]["wi"], f["mlp"]["wo"]
            y = _act(cfg.activation, x @ np.asarray(wi["kernel"], np.float64) + wi["bias"])
            y = y @ np.asarray(wo2["kernel"], np.float64) + wo2["bias"]
            return _ln(x + y, {k: np.asarray(v, np.float64) for k, v in f["layer_norm"].items()},
                       cfg.layer_norm_eps)

        h = ff(new_h)
        g = None if new_g is None else ff(new_g)
    out = h if g is None else g
    logits = out @ emb.T + np.asarray(params["lm_bias"], np.float64)
    return h, logits
