"""See inside one answer: the question's tokens, retrieval at each stage, the packed prompt, attention over sources,
and what other decoding strategies would have said.

It runs ``rag ask``'s own path (rag/answer/pipeline.py: the same retrieval, packing, answer mode and fallbacks),
decoding through transformers' forward pass with eager attention (the fused kernels return no weights), so the
answer it explains is the answer ``ask`` gives, and each answer token's attention over the prompt is recorded as
the token is produced (rag/tools/attention.py defines the shares).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from rag.answer.modes import check_mode
from rag.answer.pipeline import Run, answer
from rag.answer.prompt import PackedPrompt, source_label
from rag.errors import ConfigError
from rag.models.decoding import Decoding, drain
from rag.models.hf_session import TransformersSession, eager_attention
from rag.tools import attention
from rag.tools.attention import Attention

if TYPE_CHECKING:
    from rag.api import Index
    from rag.models.generator import Generator
    from rag.retrieval.retrieve import Retrieval
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
class PromptCandidate:
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
class Explanation:
    """Everything ``rag explain`` shows for one question."""

    question: str
    embedder_tokens: TokenView
    generator_tokens: TokenView
    retrieval: dict[str, Any]  # mode and settings
    candidates: list[PromptCandidate]
    prompt: PromptView | None  # None when nothing relevant was retrieved
    answer_mode: str = "quote"  # the answer mode that produced ``answer``, as in Answer.answer_mode
    answer: str = ""
    answer_ids: list[int] = field(default_factory=list)
    # The model's own answer when the shown one replaced it (auto's free answer that was not a span of a source
    # sentence): ``answer_ids``, the attention and the steps are of this one then.
    replaced: str = ""
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
    enc = index.embedder.encode(text)
    special = [bool(m) for m in enc.special_tokens_mask]
    return TokenView(
        index.embedder.source.name, list(enc.tokens), list(enc.ids), [tuple(o) for o in enc.offsets], special
    )


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


def retrieval_stages(index: Index, retrieval: Retrieval, packed: PackedPrompt | None, k: int) -> list[PromptCandidate]:
    """Every candidate the retrievers proposed, with what became of it on its way into the prompt."""
    config = index.config
    unfocused = {h.chunk_id for h in packed.unfocused} if packed else set()
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
        elif c.chunk_id in unfocused:
            reason = f"none of the {config.focus_sentences} focus sentences"
        else:
            reason = "context budget"
        out.append(
            PromptCandidate(
                chunk_id=c.chunk_id,
                path=row.path if row else "?",
                location=row.location() if row else "?",
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
    return out


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
    positions = attention.positions(tokens.offsets, spans)
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


# --- all together ---------------------------------------------------------------------------------------------


def explain(
    index: Index,
    question: str,
    *,
    k: int | None = None,
    max_new_tokens: int = 64,
    first_steps: int = 5,
    compare_decoding: bool = False,
    retrieval: str | None = None,
    filters: Filters | None = None,
    mmr: float | None = None,
    answer_mode: str | None = None,
) -> Explanation:
    """Explain how ``index`` answers ``question``: tokens, retrieval stages, prompt, attention, decoding.

    Retrieval is ``rag ask``'s (``retrieval``: dense | bm25 | hybrid, default the configured one; ``filters`` and
    ``mmr`` as in :meth:`Index.retrieve`), and so is the answer: ``answer_mode`` (default the configured one) runs
    with its fallbacks, greedily, with ``max_new_tokens`` setting the context budget as ``rag ask``'s flag does.
    Attention is that of the decoding run whose text became the answer (none for ``extract``, which generates
    nothing). The answer's ``cited`` sources are its ``[n]`` markers, or the sources its support check found. With
    ``compare_decoding`` the same prompt is also answered by each strategy in :data:`COMPARED`.
    """
    if max_new_tokens < 1:
        raise ConfigError("--max-new-tokens: must be at least 1")
    config = index.config
    k = k or config.sources_k
    answer_mode = check_mode(answer_mode or config.answer_mode)
    found = index.retrieve(question, k, retrieval=retrieval, min_score=config.min_score, filters=filters, mmr=mmr)
    gen = index.generator
    recorder = TransformersSession(gen.model, record=True, keep_logits=first_steps)
    with eager_attention(gen.model):
        stream = answer(
            index.answerer, question, found.hits, answer_mode, Decoding(max_new_tokens=max_new_tokens), {}, {},
            session=recorder,
        )  # fmt: skip
        drain(iter(stream))
    asked, packed = stream.answer, stream.prompt
    settings = {
        "mode": found.mode,
        "k": k,
        "min_score": config.min_score,
        "searched": len(found.candidates),
        **{key: v for key, v in found.settings.items() if key not in ("k", "min_score")},
    }
    result = Explanation(
        question=question,
        embedder_tokens=embedder_tokens(index, question),
        generator_tokens=generator_tokens(gen, question),
        retrieval=settings,
        candidates=retrieval_stages(index, found, packed, k),
        prompt=None,
        answer_mode=asked.answer_mode,
    )
    if packed is None:
        return result
    settings["context_budget"] = min(config.context_tokens, gen.context_window) - max_new_tokens
    view, prompt_tokens = prompt_view(gen, packed)
    result.prompt = view
    result.candidates = [
        c if c.source is None else replace(c, prompt_tokens=view.source_tokens[c.source - 1]) for c in result.candidates
    ]
    result.answer, result.cited = asked.text, asked.cited
    run = stream.runs[-1] if stream.runs else None
    if run is not None:
        _record(result, run, recorder, gen, view, prompt_tokens)
        if run.kind != asked.answer_mode:
            result.replaced = gen.tokenizer.decode(result.answer_ids).strip()
    if compare_decoding:
        result.compared = compare(gen, packed.messages, max_new_tokens)
    return result


def _record(
    result: Explanation, run: Run, recorder: TransformersSession, gen: Generator, view: PromptView, prompt: TokenView
) -> None:
    """The answer's tokens, their attention over the sources and the first decoding steps, from ``run``."""
    decoded = list(run.stats.token_ids)
    kept = run.stats.kept_tokens if run.stats.kept_tokens is not None else len(decoded)
    ids = decoded[:kept]  # a quote's cut: attention rows of the kept tokens only
    eos = min(gen.eos_ids(), default=0)
    result.answer_ids = ids
    result.steps = [
        _step(gen, logits, n + 1, decoded[n] if n < len(decoded) else eos) for n, logits in enumerate(recorder.logits)
    ]
    layers = int(gen.model.config.num_hidden_layers)
    weights = attention.weights_matrix(recorder.attention[: len(ids)], len(prompt.ids), layers)
    where = attention.positions(prompt.offsets, view.source_spans)
    pieces = [gen.tokenizer.decode([i]) for i in ids]
    heads = int(gen.model.config.num_attention_heads)
    result.attention = attention.attention_over_sources(weights, where, len(prompt.ids), pieces, heads)
    result.attention.context_tokens = [
        [view.text[prompt.offsets[i][0] : prompt.offsets[i][1]] for i in ps] for ps in where
    ]


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


def compare(gen: Generator, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, str]:
    """The answer each strategy of :data:`COMPARED` gives to the same prompt."""
    out = {}
    for name, decoding in COMPARED.items():
        stream = gen.stream(messages, replace(decoding, max_new_tokens=max_new_tokens))
        out[name] = "".join(stream).strip()
    return out
