"""PNG drawings for ``rag explain`` and ``rag map``. matplotlib is imported here only, and only when drawing.

Figures are drawn with the Agg canvas directly (no pyplot, no display) and saved without tight cropping, so a
PNG's size in pixels is exactly ``width x height`` as returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.tools.embedding_map import EmbeddingMap
    from rag.tools.explain import Attention

DPI = 100


def _figure(width: int, height: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> tuple[int, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    w, h = fig.get_size_inches() * DPI
    return round(w), round(h)


def _label(token: str) -> str:
    return repr(token)[1:-1][:14] or "·"


def source_heatmap(attention: Attention, sources: list[str], path: Path, layer: int | None = None) -> tuple[int, int]:
    """Answer tokens (rows) x sources (columns), each cell the token's share of source attention."""
    import numpy as np

    shares = np.asarray(attention.shares if layer is None else attention.layer_shares(layer))
    rows = max(len(attention.answer_tokens), 1)
    width, height = 300 + 110 * max(len(sources), 1), 170 + 16 * rows
    fig = _figure(width, height)
    ax = fig.add_axes((170 / width, 120 / height, 1 - 260 / width, 1 - 160 / height))
    image = ax.imshow(shares if shares.size else np.zeros((1, 1)), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(attention.answer_tokens)), [_label(t) for t in attention.answer_tokens], fontsize=8)
    ax.set_xticks(range(len(sources)), [f"[{n}] {s[:28]}" for n, s in enumerate(sources, 1)], fontsize=8)
    ax.tick_params(axis="x", labelrotation=30)
    where = "mean over layers and heads" if layer is None else f"layer {layer + 1}, mean over heads"
    ax.set_title(f"Attention share over sources per answer token ({where})", fontsize=9)
    fig.colorbar(image, cax=fig.add_axes((1 - 70 / width, 120 / height, 15 / width, 1 - 160 / height)))
    return _save(fig, path)


def context_heatmap(
    attention: Attention, source: int, tokens: list[str], label: str, path: Path, layer: int | None = None
) -> tuple[int, int]:
    """Answer tokens (rows) x the tokens of source ``source`` (columns): raw attention weights."""
    weights = attention.context(source, layer)
    rows, cols = max(weights.shape[0], 1), max(weights.shape[1], 1)
    width, height = min(260 + 12 * cols, 2400), 190 + 16 * rows
    fig = _figure(width, height)
    ax = fig.add_axes((150 / width, 130 / height, 1 - 240 / width, 1 - 170 / height))
    image = ax.imshow(weights, aspect="auto", cmap="magma")
    ax.set_yticks(range(len(attention.answer_tokens)), [_label(t) for t in attention.answer_tokens], fontsize=8)
    if 12 * cols <= width:  # one label per column only when they can be read
        ax.set_xticks(range(len(tokens)), [_label(t) for t in tokens], fontsize=6, rotation=90)
    where = "mean over layers and heads" if layer is None else f"layer {layer + 1}, mean over heads"
    ax.set_title(f"Attention of each answer token to the tokens of [{source}] {label[:60]} ({where})", fontsize=9)
    fig.colorbar(image, cax=fig.add_axes((1 - 70 / width, 130 / height, 15 / width, 1 - 170 / height)))
    return _save(fig, path)


def map_png(emap: EmbeddingMap, path: Path, width: int = 1100, height: int = 800) -> tuple[int, int]:
    """Chunks as dots coloured by document; the query as a star, its hits ringed and numbered by rank."""
    fig = _figure(width, height)
    show_legend = len(emap.documents) <= 20
    right = 0.68 if show_legend else 0.97
    ax = fig.add_axes((0.06, 0.08, right - 0.06, 0.84))
    _draw_map(ax, emap, _map_title(emap))
    if show_legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False, markerscale=1.5)
    return _save(fig, path)


def map_pair_png(before: EmbeddingMap, after: EmbeddingMap, path: Path, height: int = 700) -> tuple[int, int]:
    """The same chunks under two embedding models, side by side, in the same colours."""
    fig = _figure(2 * height, height)
    for n, (emap, when) in enumerate(((before, "before"), (after, "after"))):
        ax = fig.add_axes((0.04 + n * 0.5, 0.08, 0.43, 0.80))
        _draw_map(ax, emap, f"{when}: {Path(emap.embedder).name}\n{_map_title(emap)}")
    return _save(fig, path)


def _map_title(emap: EmbeddingMap) -> str:
    title = f"{len(emap.chunk_ids)} chunks"
    if emap.sampled:
        title += f" (random sample of {emap.total_chunks}, seed {emap.seed})"
    title += f" from {len(emap.documents)} documents, {emap.method.upper()}"
    if emap.method == "tsne":
        title += f" (perplexity {emap.perplexity:g}, seed {emap.seed})"
    elif emap.explained_variance:
        title += " ({:.0%} + {:.0%} of variance)".format(*emap.explained_variance)
    if emap.query:
        title += f"\n★ query: {emap.query[:90]}  (rings: its top {len(emap.hits)})"
    return title


def _draw_map(ax: Any, emap: EmbeddingMap, title: str) -> None:
    import numpy as np
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    colour = {d: cmap(n % 20) for n, d in enumerate(emap.documents)}
    paths = np.asarray(emap.paths)
    size = 14 if len(paths) < 2000 else 4
    for doc in emap.documents:
        pts = emap.points[paths == doc]
        ax.scatter(pts[:, 0], pts[:, 1], s=size, color=colour[doc], label=Path(doc).name[:40], alpha=0.8, lw=0)
    for hit in emap.hits:
        ax.scatter([hit["x"]], [hit["y"]], s=120, facecolors="none", edgecolors="black", linewidths=1.5)
        ax.annotate(str(hit["rank"]), (hit["x"], hit["y"]), xytext=(5, 5), textcoords="offset points", fontsize=9)
    if emap.query_point is not None:
        ax.scatter([emap.query_point[0]], [emap.query_point[1]], marker="*", s=320, color="red", edgecolors="black")
    ax.set_title(title, fontsize=9)
