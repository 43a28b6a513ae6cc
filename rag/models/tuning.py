"""Fine-tuning a sentence-transformers embedder on (query, positive, hard negatives) examples, on the CPU.

The loss is the multiple-negatives ranking loss (InfoNCE): each query is scored against every positive and every
hard negative in its batch, and trained to rank its own positive first. Examples that carry a teacher's scores
(unlabelled runs, rag/tools/teacher.py) are trained on the teacher's margins instead (margin-MSE).

The loop is written out (rather than ``SentenceTransformer.fit``) because sentence-transformers' trainer needs the
``datasets`` package and cannot stop on a time budget; here a run stops when its next step would overrun
``minutes``, and the learning rate decays to zero at the step where it will stop (re-estimated from the measured
step time), so a budgeted run ends as annealed as a full one.

Where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), the forward pass runs under bfloat16 autocast:
the weights and optimiser stay float32 and a step is faster (`python -m bench tuning`; bench/RESULTS.md).
Elsewhere bfloat16 is emulated and slower, so ``precision="auto"`` keeps float32.

The model is written to a temporary folder and renamed into place, so a run killed at any point leaves either no
model or a whole one.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag.models.sources import EmbedderSource, prepare_hub_access

TUNING_FILE = "tuning.json"  # beside the model files: what it was tuned from and how
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Example:
    """One training example: a query, the text that answers it, and texts that look relevant but are not."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    # A teacher's scores of the positive and of each negative: when given, the loss is margin-MSE instead.
    teacher: tuple[float, ...] = ()


@dataclass(frozen=True)
class TrainSettings:
    minutes: float = 30.0  # wall-clock budget of the training loop (loading and saving come on top)
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup: float = 0.1  # share of the steps with a rising learning rate
    scale: float = 20.0  # cosine similarities times this are the logits (sentence-transformers' default)
    negatives_per_example: int = 2
    seed: int = 0
    threads: int | None = None  # torch threads; None: torch's default (one per core)
    precision: str = "auto"  # "auto" (bfloat16 where the CPU has it natively), "bf16" or "fp32"


@dataclass(frozen=True)
class TrainProgress:
    step: int
    steps: int  # planned: the smaller of the epochs' steps and what the budget allows
    epoch: int
    loss: float
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / max(self.step, 1) * max(self.steps - self.step, 0)


@dataclass(frozen=True)
class TrainReport:
    steps: int
    examples: int
    epochs: float  # passes over the examples, fractional when the budget stopped the run
    seconds: float
    stopped_by: str  # "epochs" | "budget" | "cancelled"
    loss: str  # "infonce", or "margin-mse" when every example carries a teacher's scores
    precision: str  # what the forward pass ran in: "bf16" or "fp32"
    first_loss: float
    last_loss: float  # mean of the last few steps

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fine_tune(
    base: EmbedderSource,
    examples: Sequence[Example],
    out: Path,
    settings: TrainSettings,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    record: dict[str, Any] | None = None,
) -> TrainReport:
    """Fine-tune ``base`` on ``examples`` and save it as a sentence-transformers folder at ``out`` (with
    ``record`` and the report in its tuning.json). Seeded: the same inputs and settings give the same model."""
    if not examples:
        raise ValueError("no training examples")
    if settings.negatives_per_example < 0:
        raise ValueError(f"negatives_per_example={settings.negatives_per_example} must be >= 0")
    if settings.precision not in PRECISIONS:
        raise ValueError(f"precision={settings.precision!r} must be one of {', '.join(PRECISIONS)}")
    prepare_hub_access(base.local)
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    before_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        model = SentenceTransformer(base.location, device="cpu", local_files_only=base.local)
        model.train()
        bf16 = _use_bf16(settings.precision, torch)
        margin = all(e.teacher and e.negatives for e in examples)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
        per_epoch = -(-len(examples) // settings.batch_size)
        planned = settings.epochs * per_epoch
        budget_s = settings.minutes * 60
        plan = {"steps": planned}

        def rate(step: int) -> float:  # warm up, then decay linearly to zero at the planned last step
            warm = max(1, int(plan["steps"] * settings.warmup))
            return min(1.0, (step + 1) / warm) * max(0.0, 1 - step / max(plan["steps"], 1))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        started = time.monotonic()
        losses: list[float] = []
        step, stopped_by = 0, "epochs"
        order = list(range(len(examples)))
        for epoch in range(settings.epochs):
            rng.shuffle(order)
            for at in range(0, len(order), settings.batch_size):
                if step >= plan["steps"]:
                    stopped_by = "budget"
                    break
                if cancelled and cancelled():
                    stopped_by = "cancelled"
                    break
                batch = [examples[i] for i in order[at : at + settings.batch_size]]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    if margin:
                        loss_tensor = _margin_loss(model, batch, F, torch)
                    else:
                        loss_tensor = _loss(model, batch, settings, rng, F, torch)
                loss_tensor.backward()  # outside autocast: the backward pass runs in the forward's dtypes anyway
                loss = float(loss_tensor.item())
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                step += 1
                losses.append(loss)
                elapsed = time.monotonic() - started
                if step >= 3:  # the first steps include warm-up costs; later ones predict the rest
                    plan["steps"] = min(planned, int(budget_s / (elapsed / step)))
                if progress:
                    progress(TrainProgress(step, max(plan["steps"], step), epoch, loss, elapsed))
            else:
                continue
            break
        seconds = time.monotonic() - started
        report = TrainReport(
            steps=step,
            examples=len(examples),
            epochs=round(step / per_epoch, 3),
            seconds=round(seconds, 1),
            stopped_by=stopped_by,
            loss="margin-mse" if margin else "infonce",
            precision="bf16" if bf16 else "fp32",
            first_loss=round(losses[0], 4) if losses else 0.0,
            last_loss=round(sum(losses[-10:]) / max(len(losses[-10:]), 1), 4),
        )
        _save(model, out, {**(record or {}), "settings": asdict(settings), "report": report.as_dict()})
        return report
    finally:
        torch.set_num_threads(before_threads)


def _loss(model, batch: list[Example], settings: TrainSettings, rng: random.Random, F, torch):
    """One optimiser step's forward pass: the batch's InfoNCE loss, a tensor to call backward on."""
    queries = [e.query for e in batch]
    documents = [e.positive for e in batch]
    for e in batch:
        if e.negatives:
            documents.extend(rng.sample(e.negatives, min(settings.negatives_per_example, len(e.negatives))))
    q = F.normalize(model(model.tokenize(queries))["sentence_embedding"].float(), dim=-1)
    d = F.normalize(model(model.tokenize(documents))["sentence_embedding"].float(), dim=-1)
    # Query i's positive is document i; every other document of the batch is one of its negatives.
    return F.cross_entropy(q @ d.T * settings.scale, torch.arange(len(batch)))


def _margin_loss(model, batch: list[Example], F, torch):
    """One step's forward pass with a teacher: margin-MSE (Hofstätter et al., 2020). The tuned model's cosine
    margins between an example's positive and each of its negatives regress on the teacher's margins, so a
    negative the teacher rates as good as the positive is not pushed away."""
    documents: list[str] = []
    # Per (example, negative): its query's row, where its two texts are, and the teacher's margin.
    owners, positives, negatives, margins = [], [], [], []
    for i, e in enumerate(batch):
        own = len(documents)
        documents.append(e.positive)
        for negative, score in zip(e.negatives, e.teacher[1:], strict=True):  # all: each was scored
            owners.append(i)
            positives.append(own)
            negatives.append(len(documents))
            documents.append(negative)
            margins.append(e.teacher[0] - score)
    q = F.normalize(model(model.tokenize([e.query for e in batch]))["sentence_embedding"].float(), dim=-1)
    d = F.normalize(model(model.tokenize(documents))["sentence_embedding"].float(), dim=-1)
    q = q[torch.tensor(owners)]
    student = (q * d[torch.tensor(positives)]).sum(-1) - (q * d[torch.tensor(negatives)]).sum(-1)
    return F.mse_loss(student, torch.tensor(margins))


def _use_bf16(precision: str, torch) -> bool:
    if precision != "auto":
        return precision == "bf16"
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _save(model, out: Path, record: dict[str, Any]) -> None:
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.eval()
    model.save(str(partial))
    (partial / TUNING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)


def read_record(folder: Path) -> dict[str, Any] | None:
    """The tuning.json of a folder ``fine_tune`` wrote, or None for any other model folder."""
    path = folder / TUNING_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
