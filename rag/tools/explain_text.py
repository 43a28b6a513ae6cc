"""``rag explain`` for a terminal: plain text lines, no colour or cursor tricks, so it also reads well in a pipe."""

from __future__ import annotations

from pathlib import Path

from rag.tools.explain import Explanation

_SHADES = " ░▒▓█"
# Retrieval looks 100 deep; the table shows the best of them (and every kept one).
SHOW_CANDIDATES = 15


def _shade(value: float) -> str:
    return _SHADES[min(int(value * len(_SHADES)), len(_SHADES) - 1)]


def _bar(value: float, width: int = 24) -> str:
    return "█" * round(value * width)


def _token(t: str) -> str:
    return repr(t)[1:-1]


def render(e: Explanation, *, layer: int | None = None, show_prompt: bool = True) -> list[str]:
    """The explanation as text; ``layer`` (0-based) shows that layer's attention instead of the mean."""
    out: list[str] = []
    add = out.append
    add(f"Question: {e.question}")
    add("")
    add("Tokens")
    for view in (e.embedder_tokens, e.generator_tokens):
        add(f"  {view.model} ({len(view.ids)} tokens)")
        add("    " + " | ".join(_token(t) for t in view.tokens))
        add("    ids: " + " ".join(str(i) for i in view.ids))
    add("")
    r = e.retrieval
    add(f"Retrieval ({r['mode']}, k={r['k']}, min_score {r['min_score']:g}, {r['searched']} candidates searched)")
    add(f"  {'#':>3} {'dense':>6} {'bm25':>7} {'fused':>7}  {'file · location':<58} outcome")
    shown = [c for n, c in enumerate(e.candidates) if n < SHOW_CANDIDATES or c.rank is not None]
    for c in shown:
        bm25 = f"{c.bm25_score:7.2f}" if c.bm25_score is not None else f"{'-':>7}"
        fused = f"{c.fused_score:7.4f}" if c.fused_score is not None else f"{'-':>7}"
        dense = f"{c.dense_score:6.3f}" if c.dense_score is not None else f"{'-':>6}"
        where = f"{Path(c.path).name} · {c.location}"
        where = where[:57] + "…" if len(where) > 58 else where
        tokens = f" ({c.prompt_tokens} tokens)" if c.prompt_tokens else ""
        rank = c.rank if c.rank is not None else "-"
        add(f"  {rank!s:>3} {dense} {bm25} {fused}  {where:<58} {c.reason}{tokens}")
    if len(shown) < len(e.candidates):
        add(f"  ... {len(e.candidates) - len(shown)} more candidates, all dropped (--json lists every one)")
    if e.prompt is None:
        add("")
        add("Nothing relevant was retrieved: no prompt, no answer.")
        return out
    p = e.prompt
    add("")
    add(
        f"Prompt: {p.tokens} tokens = sources {sum(p.source_tokens)} + instructions, question and template "
        f"{p.other_tokens}"
    )
    for n, (label, count) in enumerate(zip(p.sources, p.source_tokens, strict=True), start=1):
        add(f"  [{n}] {label}: {count} tokens")
    if show_prompt:
        add("  ---- exactly as the generator read it ----")
        out.extend("  " + line for line in p.text.splitlines())
        add("  ------------------------------------------")
    add("")
    how = {
        "quote": "greedy quote, cut where the model most wanted to end",
        "extract": "the source sentence most similar to the question; nothing generated",
    }.get(e.answer_mode, "greedy, free")
    add(f"Answer ({how}; {0 if e.replaced else len(e.answer_ids)} tokens): {e.answer}")
    if e.replaced:
        add(f"  in place of the model's own answer, not a span of a source sentence: {e.replaced!r} (shown below)")
    cited = ", ".join(f"[{n}]" for n in e.cited) or "nothing"
    add(f"  {'copied from' if e.answer_mode == 'quote' else 'cites'}: {cited}")
    a = e.attention
    if a is None or not a.answer_tokens:
        return out
    shares = a.shares if layer is None else a.layer_shares(layer)
    whole = a.answer_share if layer is None else a.layer_answer_share[layer]
    where = f"mean over {a.layers} layers x {a.heads} heads" if layer is None else f"layer {layer + 1} of {a.layers}"
    add("")
    add(f"Attention over sources ({where}); shares of the attention that went to source text, summing to 1")
    for n, (label, share) in enumerate(zip(p.sources, whole, strict=True), start=1):
        add(f"  [{n}] {share:5.1%} {_bar(share):<24} {label[:70]}")
    mean = len(a.answer_tokens)
    add(
        f"  (of all attention, on average {sum(a.source_mass) / mean:.0%} went to the sources, "
        f"{sum(a.other_prompt) / mean:.0%} to the rest of the prompt, {sum(a.answer_so_far) / mean:.0%} to the "
        "answer so far; the first prompt token alone draws much of it, an attention sink)"
    )
    add("  per answer token (shade = share):")
    add("    " + f"{'token':<16}" + "".join(f"[{n}]".center(5) for n in range(1, len(p.sources) + 1)))
    for token, row in zip(a.answer_tokens, shares, strict=True):
        add(f"    {_token(token)[:15]:<16}" + "".join(_shade(v).center(5) for v in row))
    if e.steps:
        add("")
        add("Decoding: the most likely next tokens at each of the first steps (p; p at temperature 0.7 / 1.3)")
        # Under the quote constraint the choice is the likeliest token that continues a span of the sources.
        taker = "the quote takes" if e.answer_mode == "quote" else "greedy takes"
        for s in e.steps:
            cands = "  ".join(
                f"{_token(c['token'])!r} {c['p']:.2f} ({c['p_t0.7']:.2f}/{c['p_t1.3']:.2f})" for c in s.candidates
            )
            add(f"  {s.position}. {cands}")
            add(
                f"     {taker} {_token(s.chosen)!r}; top-p 0.9 samples among {s.top_p_keeps} tokens; "
                f"top-k 40 holds {s.top_k_mass:.0%} of the probability"
            )
    if e.compared:
        add("")
        add("Side by side: the same prompt under each decoding strategy (sampling with seed 0)")
        width = max(len(name) for name in e.compared)
        for name, text in e.compared.items():
            add(f"  {name:<{width}}  {' '.join(text.split())}")
    return out
