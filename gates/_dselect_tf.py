"""DSelect-k as one ``tf.custom_gradient`` with an analytic backward (TensorFlow).

The same algorithm as ``gates/_dselect_torch.py`` (see its docstring for the math): forward builds ``alpha_i r_i``
bit by bit, backward uses suffix contractions and prefix products, both ``O(B k N)``; only ``z`` and ``w`` are kept.
"""

from __future__ import annotations

import functools

import tensorflow as tf


def _smooth_step_and_slope(z: tf.Tensor, gamma: float) -> tuple[tf.Tensor, tf.Tensor]:
    half = gamma / 2
    inside = (z > -half) & (z < half)
    poly = (-2.0 / gamma**3) * z**3 + (1.5 / gamma) * z + 0.5
    s = tf.where(z <= -half, tf.zeros_like(z), tf.where(z >= half, tf.ones_like(z), poly))  # NaN stays NaN
    slope = tf.where(inside, (-6.0 / gamma**3) * z * z + 1.5 / gamma, tf.zeros_like(z))
    return s, slope


def _interleave(lo: tf.Tensor, hi: tf.Tensor) -> tf.Tensor:
    """``(B, k, L)``, ``(B, k, L) -> (B, k, 2L)`` with index ``2i + bit``."""
    both = tf.stack([lo, hi], axis=-1)
    return tf.reshape(both, tf.concat([tf.shape(lo)[:-1], [-1]], axis=0))


@functools.cache
def _dselect_k_op(num_experts: int, gamma: float):
    @tf.custom_gradient
    def op(z: tf.Tensor, w: tf.Tensor):
        # z (B, k, m), w (B, k)
        m = z.shape[-1]
        s, _ = _smooth_step_and_slope(z, gamma)
        alpha = tf.nn.softmax(w, axis=-1)  # (B, k)
        s0 = s[..., 0:1]
        r = alpha[..., None] * tf.concat([1 - s0, s0], axis=-1)  # (B, k, 2)
        for j in range(1, m):
            sj = s[..., j : j + 1]
            r = _interleave(r * (1 - sj), r * sj)  # (B, k, 2^(j+1))
        q = tf.reduce_sum(r[..., :num_experts], axis=-2)  # (B, n)

        def grad(grad_q: tf.Tensor):
            s, slope = _smooth_step_and_slope(z, gamma)
            alpha = tf.nn.softmax(w, axis=-1)
            big_n = 1 << m
            g = tf.pad(grad_q, [[0, 0], [0, big_n - num_experts]]) if big_n != num_experts else grad_q
            diffs = [None] * m
            c = g[:, None, :]  # (B, 1, N)
            for j in range(m - 1, -1, -1):
                pairs = tf.reshape(c, tf.concat([tf.shape(c)[:-1], [-1, 2]], axis=0))  # (B, k|1, 2^j, 2)
                c0, c1 = pairs[..., 0], pairs[..., 1]
                diffs[j] = c1 - c0
                c = c0 + s[..., j : j + 1] * (c1 - c0)  # (B, k, 2^j)
            big_r = c[..., 0]  # (B, k)
            columns = []
            prefix = tf.ones_like(s[..., 0:1])  # (B, k, 1)
            for j in range(m):
                columns.append(tf.reduce_sum(prefix * diffs[j], axis=-1))
                if j + 1 < m:
                    sj = s[..., j : j + 1]
                    prefix = _interleave(prefix * (1 - sj), prefix * sj)
            grad_s = tf.stack(columns, axis=-1)  # (B, k, m)
            grad_z = alpha[..., None] * grad_s * slope
            grad_w = alpha * (big_r - tf.reduce_sum(alpha * big_r, axis=-1, keepdims=True))
            return grad_z, grad_w

        return q, grad

    return op


def dselect_k_fused(z_logits: tf.Tensor, w_logits: tf.Tensor, num_experts: int, gamma: float) -> tf.Tensor:
    """``z_logits (..., k, m)``, ``w_logits (..., k) -> (..., n)``; arguments already checked by the caller."""
    k, m = z_logits.shape[-2], z_logits.shape[-1]
    out_dtype = z_logits.dtype
    compute = out_dtype if out_dtype in (tf.float32, tf.float64) else tf.float32
    lead = tf.shape(z_logits)[:-2]
    z = tf.reshape(tf.cast(z_logits, compute), [-1, k, m])
    w = tf.reshape(tf.cast(w_logits, compute), [-1, k])
    q = _dselect_k_op(num_experts, float(gamma))(z, w)
    return tf.cast(tf.reshape(q, tf.concat([lead, [num_experts]], axis=0)), out_dtype)
