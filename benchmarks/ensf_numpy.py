"""A plain NumPy EnSF analysis (paired or mixture prior, arctan observation): the peer for
timing, written straight from the equations with NumPy's own arctan and normal generator."""

from __future__ import annotations

import numpy as np


def analysis(rng, x, y, obs_std, *, prior="paired", eps_a=0.5, eps_b=0.025, n_steps=500,
             clip=1000.0, kernel_var=0.0):
    """x: (N, d) float32 forecast, y: (d,) arctan observations. Returns (N, d)."""
    n, d = x.shape
    dt = np.float32(1.0 / n_steps)
    z = rng.standard_normal((n, d), dtype=np.float32)
    inv_var = np.float32(1.0 / obs_std**2)
    for k in range(n_steps):
        t = 1.0 - k * dt
        alpha = 1.0 - (1.0 - eps_a) * t
        beta2 = eps_b + (1.0 - eps_b) * t
        f = -(1.0 - eps_a) / alpha
        g2 = (1.0 - eps_b) - 2.0 * f * beta2
        var = alpha**2 * kernel_var + beta2
        if prior == "paired":
            score = -(z - alpha * x) / var
        else:
            mx = alpha * x
            sq = (z * z).sum(1)[:, None] - 2.0 * z @ mx.T + (mx * mx).sum(1)[None, :]
            logits = -0.5 * sq / var
            w = np.exp(logits - logits.max(1, keepdims=True))
            w /= w.sum(1, keepdims=True)
            score = -(z - w @ mx) / var
        score += (1.0 - t) * (-(np.arctan(z) - y) * inv_var / (1.0 + z * z))
        np.clip(score, -clip, clip, out=score)
        z = z - dt * (f * z - g2 * score) + np.sqrt(dt * g2) * rng.standard_normal((n, d), dtype=np.float32)
    return z
