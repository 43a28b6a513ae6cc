"""Next-token selection: greedy, temperature, top-k, top-p and repetition penalty.

A language model returns one logit (an unnormalised score) per vocabulary
token.  This module shows, in plain Python, the usual ways of turning those
logits into the next token.  The functions work on a dict that maps a token
string to its logit, which keeps the examples readable; real libraries do the
same on tensors indexed by token id.

Typical order of operations in an inference library:

    logits -> repetition penalty -> temperature -> top-k -> top-p -> sample
"""

import math
import random


def softmax(logits):
    """Convert a dict of logits into a dict of probabilities summing to 1."""
    m = max(logits.values())  # subtract the max for numerical stability
    exps = {tok: math.exp(v - m) for tok, v in logits.items()}
    total = sum(exps.values())
    return {tok: e / total for tok, e in exps.items()}


def greedy(logits):
    """Greedy decoding: always return the single highest-scoring token.

    This is deterministic and equivalent to sampling at temperature 0, or to
    beam search with a beam width of 1.
    """
    return max(logits, key=logits.get)


def apply_repetition_penalty(logits, previous_tokens, penalty=1.2):
    """Make tokens that already appeared less likely (CTRL-style penalty).

    A positive logit is divided by the penalty and a negative logit is
    multiplied by it, so the token is pushed down in both cases.  A penalty
    of 1.0 leaves the logits unchanged; the CTRL paper (Keskar et al., 2019)
    suggested about 1.2.
    """
    out = dict(logits)
    for tok in set(previous_tokens):
        if tok in out:
            out[tok] = out[tok] / penalty if out[tok] > 0 else out[tok] * penalty
    return out


def apply_temperature(logits, temperature):
    """Divide every logit by the temperature.

    temperature < 1 sharpens the distribution (safer, more repetitive text);
    temperature > 1 flattens it (more diverse, more mistakes);
    temperature == 1 changes nothing.
    """
    if temperature <= 0:
        raise ValueError("use greedy() instead of a temperature of 0")
    return {tok: v / temperature for tok, v in logits.items()}


def top_k_filter(probs, k):
    """Keep only the k most probable tokens and renormalise them."""
    kept = sorted(probs.items(), key=lambda kv: kv[1], reverse=True)[:k]
    total = sum(p for _, p in kept)
    return {tok: p / total for tok, p in kept}


def top_p_filter(probs, p):
    """Nucleus (top-p) filtering, after Holtzman et al. (2019).

    Sort tokens from most to least probable and keep the smallest set whose
    cumulative probability exceeds p (at least one token is always kept).
    Unlike top-k, the number of surviving tokens adapts to the model's
    confidence: few when the distribution is peaked, many when it is flat.
    """
    kept, cumulative = {}, 0.0
    for tok, prob in sorted(probs.items(), key=lambda kv: kv[1], reverse=True):
        kept[tok] = prob
        cumulative += prob
        if cumulative > p:
            break
    total = sum(kept.values())
    return {tok: q / total for tok, q in kept.items()}


def sample(logits, temperature=1.0, top_k=None, top_p=None,
           previous_tokens=(), repetition_penalty=1.0, rng=random):
    """Pick the next token with the full sampling pipeline."""
    if repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, previous_tokens, repetition_penalty)
    probs = softmax(apply_temperature(logits, temperature))
    if top_k is not None:
        probs = top_k_filter(probs, top_k)
    if top_p is not None:
        probs = top_p_filter(probs, top_p)
    tokens = list(probs)
    return rng.choices(tokens, weights=[probs[t] for t in tokens], k=1)[0]


if __name__ == "__main__":
    logits = {"cat": 2.0, "dog": 1.5, "fox": 0.8, "car": -0.5, "the": 1.0}
    print("probabilities:", {t: round(p, 3) for t, p in softmax(logits).items()})
    print("greedy choice:", greedy(logits))
    for t in (0.5, 1.0, 2.0):
        probs = softmax(apply_temperature(logits, t))
        print(f"T={t}: P(cat)={probs['cat']:.3f}")
    print("top-2:", top_k_filter(softmax(logits), 2))
    print("top-p 0.8:", sorted(top_p_filter(softmax(logits), 0.8)))
    penalised = apply_repetition_penalty(logits, ["cat", "car"], 1.2)
    print("after repetition penalty:", penalised)
    rng = random.Random(0)  # fixed seed so the demo is reproducible
    print("sampled:", [sample(logits, 0.7, top_k=3, top_p=0.9, rng=rng) for _ in range(8)])
