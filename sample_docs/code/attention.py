"""Scaled dot-product attention in plain Python.

This module is a teaching implementation of the core operation of a
Transformer: scaled dot-product attention, as described in "Attention Is All
You Need" (Vaswani et al., 2017).  It deliberately avoids NumPy so that every
step is visible.  Real models do exactly the same arithmetic, only on large
matrices on a GPU.

The formula is::

    Attention(Q, K, V) = softmax(Q @ K^T / sqrt(d_k)) @ V

where Q, K and V are the query, key and value matrices (one row per token) and
d_k is the length of each key vector.
"""

import math

NEG_INF = float("-inf")


def softmax(scores):
    """Turn a list of real numbers into probabilities that sum to 1.

    softmax(z)_i = exp(z_i) / sum_j exp(z_j)

    The largest score is subtracted from every score before calling exp().
    This "max trick" does not change the result, because the common factor
    cancels in the division, but it prevents math.exp from overflowing when
    scores are large.  Scores equal to -inf (masked positions) get exactly
    zero probability.
    """
    m = max(scores)
    if m == NEG_INF:  # every position is masked; return uniform weights
        return [1.0 / len(scores)] * len(scores)
    exps = [math.exp(s - m) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def dot(a, b):
    """Dot product of two equal-length vectors."""
    return sum(x * y for x, y in zip(a, b))


def causal_mask(n):
    """Return an n x n mask for decoder (left-to-right) attention.

    mask[i][j] is True when query position i may attend to key position j,
    which is the case only when j <= i.  A language model must not look at
    future tokens while it is being trained to predict them.
    """
    return [[j <= i for j in range(n)] for i in range(n)]


def scaled_dot_product_attention(Q, K, V, mask=None):
    """Compute attention outputs and weights for a single head.

    Args:
        Q: list of n query vectors, each of length d_k.
        K: list of m key vectors, each of length d_k.
        V: list of m value vectors, each of length d_v.
        mask: optional n x m table of booleans; False blocks a position.

    Returns:
        (outputs, weights): n output vectors of length d_v, and the n x m
        attention weights (each row sums to 1).
    """
    d_k = len(K[0])
    # Dividing by the square root of d_k keeps the variance of the scores
    # close to 1.
    # Without it, large d_k gives large scores, a nearly one-hot softmax and
    # vanishing gradients.
    scale = 1.0 / math.sqrt(d_k)
    outputs, weights = [], []
    for i, q in enumerate(Q):
        scores = [dot(q, k) * scale for k in K]
        if mask is not None:
            # Blocked positions get -inf, which softmax turns into weight 0.
            scores = [s if mask[i][j] else NEG_INF for j, s in enumerate(scores)]
        w = softmax(scores)
        # The output is the attention-weighted average of the value vectors.
        out = [sum(w[j] * V[j][c] for j in range(len(V))) for c in range(len(V[0]))]
        outputs.append(out)
        weights.append(w)
    return outputs, weights


def matmul(X, W):
    """Multiply a list of row vectors X by a matrix W (list of rows)."""
    return [[dot(row, col) for col in zip(*W)] for row in X]


def split_heads(X, n_heads):
    """Split each d_model-sized row into n_heads chunks of d_model // n_heads.

    With d_model = 512 and 8 heads, as in the original Transformer, each head
    works with vectors of size 64.
    """
    d_model = len(X[0])
    assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
    d_head = d_model // n_heads
    return [[row[h * d_head:(h + 1) * d_head] for row in X] for h in range(n_heads)]


def multi_head_attention(X, W_q, W_k, W_v, W_o, n_heads, causal=True):
    """Multi-head self-attention over the token vectors X.

    1. Project X to queries, keys and values with three learned matrices.
    2. Split each projection into n_heads smaller heads.
    3. Run scaled dot-product attention in every head independently.
    4. Concatenate the head outputs and mix them with the output matrix W_o.
    """
    Q, K, V = matmul(X, W_q), matmul(X, W_k), matmul(X, W_v)
    mask = causal_mask(len(X)) if causal else None
    head_outputs = []
    for q_h, k_h, v_h in zip(split_heads(Q, n_heads), split_heads(K, n_heads),
                             split_heads(V, n_heads)):
        out, _ = scaled_dot_product_attention(q_h, k_h, v_h, mask)
        head_outputs.append(out)
    concat = [sum((head[t] for head in head_outputs), []) for t in range(len(X))]
    return matmul(concat, W_o)


if __name__ == "__main__":
    # Three tokens with 4-dimensional vectors.  Using the same vectors for
    # queries, keys and values keeps the example small.
    X = [[1.0, 0.0, 1.0, 0.0],
         [0.0, 2.0, 0.0, 2.0],
         [1.0, 1.0, 1.0, 1.0]]
    out, w = scaled_dot_product_attention(X, X, X, mask=causal_mask(3))
    for i, row in enumerate(w):
        print("token", i, "attention weights:", [round(x, 3) for x in row])
    identity = [[1.0 if r == c else 0.0 for c in range(4)] for r in range(4)]
    y = multi_head_attention(X, identity, identity, identity, identity, n_heads=2)
    print("multi-head output for last token:", [round(v, 3) for v in y[-1]])
