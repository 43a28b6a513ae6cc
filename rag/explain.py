"""See inside one answer: the question's tokens, retrieval at each stage, the packed prompt, attention over sources,
and what other decoding strategies would have said.

It runs the same models, retrieval and packing as ``rag ask``. The answer it explains is decoded greedily here, one
token at a time with a KV cache and eager attention (the fused attention kernels return no weights), so each answer
token's attention over the prompt is recorded as the token is produced; ``Generator`` is only used through its
public parts (model, tokenizer, ``render``, ``stream``).

"Attention over sources": for answer token t, the attention weights of the query that produced t, averaged over
heads (and layers, unless one layer is asked for), are summed over the prompt tokens of each source block
(``[n] file (location)`` line and its text). A source's *share* is that sum divided by the sum over all source
blocks, so shares sum to 1 over the sources; the rest of the attention (system prompt, question, chat template,
the answer so far) is reported next to it as ``other_prompt`` and ``answer_so_far``, never hidden in the shares.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rag.errors import ConfigError
from rag.generate import Decoding
from rag.prompt import SYSTEM_PROMPT, PackedPrompt, focus, pack, source_label

if TYPE_CHECKING:
    import numpy as np

    from rag.api import Index
    from rag.generate import Generator
    from rag.types import Filters

# The side-by-side strategies of --compare-decoding; sampled ones use a fixed seed so a rerun gives the same text.
COMPARED: dict[str, Decoding] = {
    "greedy": Decoding(),
    "beam search (4 beams)": Decoding(num_beams=4),
    "temperature 0.7": Decoding(temperature=0.7, seed=0),
    "temperature 1.3": Decoding(temperature=1.3, seed=0),
    "top-k 40 (T=1)": Decoding(temperature=1.0, top_k=40, seed=0),
    "top-p 0.9 (T=1)": Decoding(temperature=1.0, top_p=0.9, seed=0),
}


@dataclass(frozen=True)
class TokenView:
    """A text as one model's tokenizer splits it; ``text[start:end]`` is each token's surface (special: (0, 0))."""

    model: str
    tokens: list[str]
    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]


@dataclass(frozen=True)
class Candidate:
    """One chunk considered for the prompt, with its scores at each stage and what became of it."""

    chunk_id: int
    path: str
    location: str
    dense_score: float | None
    dense_rank: int | None
    bm25_score: float | None
    bm25_rank: int | None
    fused_score: float | None
    rank: int | None  # rank among the retrieved hits; None when retrieval dropped it
    kept: bool  # in the prompt
    reason: str  # why it is in the prompt or not
    source: int | None = None  # its [n] in the prompt
    prompt_tokens: int | None = None  # generator tokens of its block in the prompt


@dataclass(frozen=True)
class PromptView:
    """The packed prompt exactly as the generator read it (chat template applied)."""

    text: str
    tokens: int
    sources: list[str]  # labels, source [n] is sources[n - 1]
    source_spans: list[tuple[int, int]]  # character span of each source block in ``text``
    source_tokens: list[int]  # generator tokens in each block
    other_tokens: int  # system prompt, question, template
    messages: list[dict[str, str]] = field(default_factory=list)  # the chat messages before the template


@dataclass(frozen=True)
class Step:
    """One decoding step: the most likely next tokens and what each strategy would keep."""

    position: int  # 1-based answer token
    chosen: str  # the greedy pick
    candidates: list[dict[str, Any]]  # token, id, p, p at T=0.7 and T=1.3
    top_p_keeps: int  # tokens in the 0.9 nucleus at T=1
    top_k_mass: float  # probability the 40 most likely tokens hold


@dataclass
class Attention:
    """Attention of each answer token over the sources; see the module docstring for the definitions."""

    layers: int
    heads: int
    answer_tokens: list[str]
    shares: list[list[float]]  # [answer token][source], mean over layers and heads; each row sums to 1
    source_mass: list[float]  # per answer token: raw attention on all source blocks together
    other_prompt: list[float]  # per answer token: raw attention on prompt tokens outside the sources
    answer_so_far: list[float]  # per answer token: raw attention on the answer generated before it
    answer_share: list[float]  # per source over the whole answer: mean of the rows of ``shares``
    layer_answer_share: list[list[float]]  # [layer][source], the same for each layer alone
    # [layer, answer token, position] attention (mean over heads) for heatmaps; not part of the JSON.
    weights: np.ndarray | None = field(default=None, repr=False)
    prompt_tokens: int = 0
    # Prompt token positions of each source block, and those tokens' text (heatmap labels).
    source_positions: list[list[int]] = field(default_factory=list, repr=False)
    context_tokens: list[list[str]] = field(default_factory=list, repr=False)

    def layer_shares(self, layer: int) -> list[list[float]]:
        """[answer token][source] shares from layer ``layer`` (0-based) alone."""
        return _shares(self.weights[layer], self.source_positions)[0].tolist()

    def context(self, source: int, layer: int | None = None) -> np.ndarray:
        """[answer token, token of source ``source`` (1-based)] attention, mean over layers unless ``layer``."""
        w = self.weights.mean(axis=0) if layer is None else self.weights[layer]
        return w[:, self.source_positions[source - 1]]

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("weights", "source_positions", "context_tokens")}
        return d


@dataclass
class Explanation:
    """Everything ``rag explain`` shows for one question."""

    question: str
    embedder_tokens: TokenView
    generator_tokens: TokenView
    retrieval: dict[str, Any]  # mode and settings
    candidates: list[Candidate]
    prompt: PromptView | None  # None when nothing relevant was retrieved
    answer_mode: str = "quote"  # how the answer was decoded: a constrained quote, or free (see explain())
    answer: str = ""
    answer_ids: list[int] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)
    attention: Attention | None = None
    steps: list[Step] = field(default_factory=list)
    compared: dict[str, str] = field(default_factory=dict)  # strategy -> answer text

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention"] = self.attention.as_dict() if self.attention else None
        return d


# --- tokens ---------------------------------------------------------------------------------------------------


def embedder_tokens(index: Index, text: str) -> TokenView:
    emb = index.embedder
    enc = emb._tokenizer.encode(text)
    special = [bool(m) for m in enc.special_tokens_mask]
    return TokenView(emb.source.name, list(enc.tokens), list(enc.ids), [tuple(o) for o in enc.offsets], special)


def generator_tokens(gen: Generator, text: str) -> TokenView:
    tok = gen.tokenizer
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    special_ids = set(tok.all_special_ids)
    return TokenView(
        gen.source.name,
        tok.convert_ids_to_tokens(ids),
        ids,
        [tuple(o) for o in enc["offset_mapping"]],
        [i in special_ids for i in ids],
    )


# --- retrieval and prompt -------------------------------------------------------------------------------------


def retrieval_stages(
    index: Index,
    question: str,
    k: int,
    max_new_tokens: int,
    *,
    mode: str | None = None,
    filters: Filters | None = None,
    mmr: float | None = None,
    system: str = SYSTEM_PROMPT,
) -> tuple[list[Candidate], PackedPrompt | None, dict[str, Any]]:
    """Every candidate the retrievers proposed with its fate, and the prompt ``rag ask`` would build from the hits.

    Retrieval is :meth:`Index.retrieve` with ``rag ask``'s settings (configured mode, ``min_score``), so the
    candidates kept are exactly what ``rag search --min-score`` returns for the same settings.
    """
    config = index.config
    retrieval = index.retrieve(question, k, mode=mode, min_score=config.min_score, filters=filters, mmr=mmr)
    hits = retrieval.hits
    settings = {
        "mode": retrieval.mode,
        "k": k,
        "min_score": config.min_score,
        "searched": len(retrieval.candidates),
        **{key: v for key, v in retrieval.settings.items() if key not in ("k", "min_score")},
    }
    packed = None
    excerpt_of: dict[int, str] = {}
    if hits:
        gen = index.generator
        budget = min(config.context_tokens, gen.context_window) - max_new_tokens
        if budget < 128:
            raise ConfigError(f"--max-new-tokens {max_new_tokens} leaves no room for sources; lower it")
        excerpts = focus(question, hits, index._similarity, config.focus_sentences) if config.focus_sentences else None
        packed = pack(question, hits, gen.count, budget, excerpts, system=system)
        settings["context_budget"] = budget
        excerpt_of = {h.chunk_id: t for h, t in zip(hits, excerpts or [h.text for h in hits], strict=True)}
    source_of = {h.chunk_id: n for n, h in enumerate(packed.sources if packed else [], start=1)}
    rows = index.store.chunks([c.chunk_id for c in retrieval.candidates])
    why = {
        "threshold": f"below min_score {config.min_score:g}",
        "mmr": "left out by MMR (diversity)",
        "beyond-k": f"beyond k={k}",
        "missing": "deleted meanwhile",
    }
    out = []
    for c in retrieval.candidates:
        row = rows.get(c.chunk_id)
        source = source_of.get(c.chunk_id)
        if source is not None:
            reason = f"in the prompt as [{source}]"
        elif not c.kept:
            reason = why.get(c.reason, c.reason)
        elif not excerpt_of.get(c.chunk_id, "").strip():
            reason = f"none of the {config.focus_sentences} focus sentences"
        else:
            reason = "context budget"
        out.append(
            Candidate(
                chunk_id=c.chunk_id,
                path=row.path if row else "?",
                location=_location(row) if row else "?",
                dense_score=c.dense_score,
                dense_rank=c.dense_rank,
                bm25_score=c.bm25_score,
                bm25_rank=c.bm25_rank,
                fused_score=c.fused_score,
                rank=c.rank,
                kept=source is not None,
                reason=reason,
                source=source,
            )
        )
    return out, packed, settings


def _location(row: Any) -> str:
    from rag.types import Hit

    return Hit(0, 0.0, row.id, row.path, row.title, row.kind, row.ordinal, row.start, row.end, row.page,
               row.heading, row.token_count, "").location()  # fmt: skip


def prompt_view(gen: Generator, packed: PackedPrompt) -> tuple[PromptView, TokenView]:
    """The rendered prompt, where each source block sits in it, and how many tokens each takes."""
    text = gen.render(packed.messages)
    # Blocks are found by their "[n] label" headers (source text cannot fake one: the prompt defuses such lines);
    # each runs to the blank line before the next block, the last to the blank line before the repeated question.
    starts = []
    pos = text.find("Sources:")
    for n, hit in enumerate(packed.sources, start=1):
        start = text.find(f"[{n}] {source_label(hit)}\n", pos)
        if pos < 0 or start < 0:  # the chat template rewrote the content; attribution would be guesswork
            raise RuntimeError(f"source [{n}] not found in the rendered prompt")
        starts.append(start)
        pos = start + 1
    last_end = text.find("\n\nQuestion:", pos)
    if starts and last_end < 0:
        raise RuntimeError("the repeated question was not found after the sources in the rendered prompt")
    spans = [(a, b) for a, b in zip(starts, [*[s - 2 for s in starts[1:]], last_end], strict=True)]
    tokens = generator_tokens(gen, text)
    positions = _positions(tokens.offsets, spans)
    counts = [len(p) for p in positions]
    view = PromptView(
        text=text,
        tokens=len(tokens.ids),
        sources=[source_label(h) for h in packed.sources],
        source_spans=spans,
        source_tokens=counts,
        other_tokens=len(tokens.ids) - sum(counts),
        messages=packed.messages,
    )
    return view, tokens


def _positions(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[list[int]]:
    # A token belongs to the block its first character lies in (byte-level BPE tokens carry the leading space).
    out: list[list[int]] = [[] for _ in spans]
    for i, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        for n, (a, b) in enumerate(spans):
            if a <= s < b:
                out[n].append(i)
                break
    return out


# --- attention ------------------------------------------------------------------------------------------------


@contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """Switch the loaded model to eager attention (the only one that returns weights) and back."""
    before = getattr(model.config, "_attn_implementation", None)
    if before == "eager" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _eos_ids(gen: Generator) -> set[int]:
    ids = {gen.tokenizer.eos_token_id}
    configured = getattr(getattr(gen.model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def decode_with_attention(
    gen: Generator,
    prompt_ids: list[int],
    max_new_tokens: int,
    first_steps: int = 5,
    processors: Sequence[Any] = (),
    stop: Sequence[str] = (),
) -> tuple[list[int], np.ndarray, list[Step]]:
    """Greedy answer ids, their attention [layer, answer token, position] (mean over heads), and the first steps.

    The row for answer token t is the attention of the query that predicted t: the last prompt token for the
    first one, answer token t-1 after that. ``processors`` (``transformers`` logits processors, e.g. the quote
    constraint) shape each choice; the steps show the model's own distribution before them. Decoding ends at
    end-of-sequence or once the answer holds one of ``stop`` (that token is not kept).
    """
    import numpy as np
    import torch

    model = gen.model
    eos = _eos_ids(gen)
    answer: list[int] = []
    rows: list[np.ndarray] = []
    steps: list[Step] = []
    with _eager_attention(model), torch.inference_mode():
        past = None
        if len(prompt_ids) > 1:
            past = model(input_ids=torch.tensor([prompt_ids[:-1]]), use_cache=True).past_key_values
        nxt = prompt_ids[-1]
        for _ in range(max_new_tokens):
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True, output_attentions=True)
            past = out.past_key_values
            logits = out.logits[0, -1].float()
            shaped = logits[None]
            for proc in processors:
                shaped = proc(torch.tensor([prompt_ids + answer]), shaped)
            nxt = int(torch.argmax(shaped[0]))
            if len(steps) < first_steps:
                steps.append(_step(gen, logits, len(steps) + 1, nxt))
            if nxt in eos or (stop and any(x in gen.tokenizer.decode([*answer, nxt]) for x in stop)):
                break
            # [layers, heads, 1, positions] -> [layers, positions], mean over heads
            rows.append(torch.stack([a[0, :, -1, :] for a in out.attentions]).float().mean(dim=1).numpy())
            answer.append(nxt)
    total = len(prompt_ids) + len(answer)
    layers = len(rows[0]) if rows else int(model.config.num_hidden_layers)
    weights = np.zeros((layers, len(rows), total), dtype=np.float32)
    for t, row in enumerate(rows):
        weights[:, t, : row.shape[1]] = row
    return answer, weights, steps


def _step(gen: Generator, logits: Any, position: int, chosen: int) -> Step:
    import torch

    probs = torch.softmax(logits, dim=-1)
    cool, hot = torch.softmax(logits / 0.7, dim=-1), torch.softmax(logits / 1.3, dim=-1)
    top = torch.topk(probs, 5)
    ordered = torch.sort(probs, descending=True).values
    nucleus = int(torch.searchsorted(torch.cumsum(ordered, 0), torch.tensor(0.9)).item()) + 1
    tok = gen.tokenizer
    return Step(
        position=position,
        chosen=tok.decode([chosen]),
        candidates=[
            {
                "token": tok.decode([int(i)]),
                "id": int(i),
                "p": float(p),
                "p_t0.7": float(cool[i]),
                "p_t1.3": float(hot[i]),
            }
            for p, i in zip(top.values, top.indices, strict=True)
        ],
        top_p_keeps=nucleus,
        top_k_mass=float(ordered[:40].sum()),
    )


def _shares(weights: np.ndarray, positions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """[answer token, source] shares (rows sum to 1) and the raw mass on all sources, from [token, position]."""
    import numpy as np

    if not positions:
        return np.zeros((len(weights), 0)), np.zeros(len(weights))
    mass = np.stack([weights[:, p].sum(axis=1) for p in positions], axis=1)
    total = mass.sum(axis=1)
    shares = np.divide(mass, total[:, None], out=np.zeros_like(mass), where=total[:, None] > 0)
    return shares, total


def attention_over_sources(
    weights: np.ndarray, positions: list[list[int]], prompt_tokens: int, answer_tokens: list[str], heads: int
) -> Attention:
    mean = weights.mean(axis=0)
    shares, source_mass = _shares(mean, positions)
    in_sources = sorted({p for ps in positions for p in ps})
    layer_answer = [_shares(w, positions)[0].mean(axis=0).tolist() if len(w) else [] for w in weights]
    return Attention(
        layers=int(weights.shape[0]),
        heads=heads,
        answer_tokens=answer_tokens,
        shares=shares.tolist(),
        source_mass=source_mass.tolist(),
        other_prompt=(mean[:, :prompt_tokens].sum(axis=1) - mean[:, in_sources].sum(axis=1)).tolist(),
        answer_so_far=mean[:, prompt_tokens:].sum(axis=1).tolist(),
        answer_share=shares.mean(axis=0).tolist() if len(shares) else [0.0] * len(positions),
        layer_answer_share=layer_answer,
        weights=weights,
        prompt_tokens=prompt_tokens,
        source_positions=positions,
    )


# --- all together ---------------------------------------------------------------------------------------------


def explain(
    index: Index,
    question: str,
    *,
    k: int | None = None,
    max_new_tokens: int = 64,
    first_steps: int = 5,
    compare_decoding: bool = False,
    mode: str | None = None,
    filters: Filters | None = None,
    mmr: float | None = None,
    answer_mode: str | None = None,
) -> Explanation:
    """Explain how ``index`` answers ``question``: tokens, retrieval stages, prompt, attention, decoding.

    Retrieval is ``rag ask``'s (``mode``: dense | bm25 | hybrid, default the configured one; ``filters`` and
    ``mmr`` as in :meth:`Index.retrieve`). The answer is decoded greedily as ``answer_mode`` (default the
    configured one) does it: ``quote`` under the quote constraint, cut and trimmed as ``rag ask`` cuts it;
    ``generate`` and ``auto`` free, with that mode's prompt, to the first line break. ``extract`` generates
    nothing, so it is shown as free generation from its prompt. The answer's ``cited`` sources are its ``[n]``
    markers, or for a quote the sources it was copied from. With ``compare_decoding`` the same prompt is also
    answered by each strategy in :data:`COMPARED` (one free generation each).
    """
    from rag.modes import PROMPTS, QUOTE_LENGTH_PENALTY, QUOTE_TOKENS, check_mode, mode_decoding, quote_constraint
    from rag.modes import trim as trim_quote
    from rag.prompt import citations

    if not question.strip():
        raise ConfigError("the question is empty; ask something")
    if max_new_tokens < 1:
        raise ConfigError("--max-new-tokens: must be at least 1")
    k = k or index.config.top_k
    answer_mode = check_mode(answer_mode or index.config.answer_mode)
    candidates, packed, settings = retrieval_stages(
        index, question, k, max_new_tokens, mode=mode, filters=filters, mmr=mmr, system=PROMPTS[answer_mode]
    )
    gen = index.generator
    result = Explanation(
        question=question,
        embedder_tokens=embedder_tokens(index, question),
        generator_tokens=generator_tokens(gen, question),
        retrieval=settings,
        candidates=candidates,
        prompt=None,
        answer_mode=answer_mode,
    )
    if packed is None:
        return result
    view, prompt_tokens = prompt_view(gen, packed)
    result.prompt = view
    result.candidates = [
        c if c.source is None else _with_tokens(c, view.source_tokens[c.source - 1]) for c in candidates
    ]
    quote = quote_constraint(question, packed, index._similarity, gen.tokenizer) if answer_mode == "quote" else None
    if quote is not None:
        ids, weights, steps = decode_with_attention(
            gen, prompt_tokens.ids, min(max_new_tokens, QUOTE_TOKENS), first_steps, [quote]
        )
        kept = quote.best_step(QUOTE_LENGTH_PENALTY)  # rag ask's cut: attention rows of the kept tokens only
        ids, weights = ids[:kept], weights[:, :kept, : len(prompt_tokens.ids) + kept]
        result.answer = trim_quote(quote.best_end(QUOTE_LENGTH_PENALTY), question)
        result.cited = [n for n, h in enumerate(packed.sources, start=1) if result.answer and result.answer in h.text]
    else:
        stop = mode_decoding(answer_mode, Decoding()).stop
        ids, weights, steps = decode_with_attention(gen, prompt_tokens.ids, max_new_tokens, first_steps, stop=stop)
        result.answer = gen.tokenizer.decode(ids, skip_special_tokens=True).strip()
        result.cited = citations(result.answer, len(view.sources))
    positions = _positions(prompt_tokens.offsets, view.source_spans)
    pieces = [gen.tokenizer.decode([i]) for i in ids]
    result.answer_ids = ids
    result.attention = attention_over_sources(
        weights, positions, len(prompt_tokens.ids), pieces, int(gen.model.config.num_attention_heads)
    )
    result.attention.context_tokens = [
        [view.text[prompt_tokens.offsets[i][0] : prompt_tokens.offsets[i][1]] for i in ps] for ps in positions
    ]
    result.steps = steps
    if compare_decoding:
        result.compared = compare(gen, packed.messages, max_new_tokens)
    return result


def _with_tokens(c: Candidate, n: int) -> Candidate:
    from dataclasses import replace

    return replace(c, prompt_tokens=n)


def compare(gen: Generator, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, str]:
    """The answer each strategy of :data:`COMPARED` gives to the same prompt."""
    from dataclasses import replace

    out = {}
    for name, decoding in COMPARED.items():
        stream = gen.stream(messages, replace(decoding, max_new_tokens=max_new_tokens))
        out[name] = "".join(stream).strip()
    return out
