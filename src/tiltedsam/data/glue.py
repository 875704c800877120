"""GLUE tasks from their TSV files (``<root>/<TASK>/{train,dev,test}.tsv``) and the GLUE metrics.

Columns are read by header name where the file has a header (RTE, MRPC, SST-2, STS-B, QNLI,
MNLI, QQP) and by position for CoLA (no header).  Test files without labels load with
``labels=None``.  A row with too few columns raises an error naming the file and line.

Metrics (GLUE's): accuracy; F1 of the positive class (MRPC, QQP); Matthews correlation (CoLA);
Pearson and Spearman correlation (STS-B).
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class TaskSpec:
    text_a: str | int
    text_b: str | int | None
    label: str | int
    label_names: tuple[str, ...] | None  # None: numeric labels (ints, or floats for regression)
    header: bool = True
    regression: bool = False
    metrics: tuple[str, ...] = ("accuracy",)


TASKS: dict[str, TaskSpec] = {
    "RTE": TaskSpec("sentence1", "sentence2", "label", ("entailment", "not_entailment")),
    "QNLI": TaskSpec("question", "sentence", "label", ("entailment", "not_entailment")),
    "MNLI": TaskSpec(
        "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction")
    ),
    "MRPC": TaskSpec("#1 String", "#2 String", "Quality", None, metrics=("accuracy", "f1")),
    "QQP": TaskSpec("question1", "question2", "is_duplicate", None, metrics=("accuracy", "f1")),
    "SST-2": TaskSpec("sentence", None, "label", None),
    "STS-B": TaskSpec(
        "sentence1", "sentence2", "score", None, regression=True, metrics=("pearson", "spearman")
    ),
    "CoLA": TaskSpec(3, None, 1, None, header=False, metrics=("matthews", "accuracy")),
}


@dataclass
class TextPairs:
    """One split: texts (and second texts for pair tasks) with labels (None for unlabeled test)."""

    task: str
    text_a: list[str]
    text_b: list[str] | None
    labels: list[float] | list[int] | None

    def __len__(self) -> int:
        return len(self.text_a)


def load_glue_split(root: str | Path, task: str, split: str) -> TextPairs:
    """Read ``<root>/<task>/<split>.tsv``; ``split`` in {train, dev, test} (MNLI: dev_matched...)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    spec = TASKS[task]
    path = Path(root) / task / f"{split}.tsv"
    if not path.exists():
        raise FileNotFoundError(f"GLUE file not found: {path}")
    verify_md5sums(Path(root), f"{task}/{split}.tsv")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a UTF-8 tab-separated GLUE file ({err})") from None
    if not rows:
        raise ValueError(f"{path} is empty")
    if spec.header:
        header, rows = rows[0], rows[1:]
        column = {name: i for i, name in enumerate(header)}
        for name in (spec.text_a, spec.text_b):
            if name is not None and name not in column:
                raise ValueError(f"{path}: missing column {name!r} (header: {header})")
        ia, ib = column[spec.text_a], column.get(spec.text_b)
        il = column.get(spec.label)
    else:
        ia, ib, il = spec.text_a, spec.text_b, spec.label
    text_a, text_b, labels = [], [] if ib is not None else None, [] if il is not None else None
    for line, row in enumerate(rows, start=2 if spec.header else 1):
        needed = max(i for i in (ia, ib, il) if i is not None) + 1
        if len(row) < needed:
            raise ValueError(
                f"{path}, line {line}: expected at least {needed} tab-separated fields, got {len(row)}"
            )
        text_a.append(row[ia])
        if text_b is not None:
            text_b.append(row[ib])
        if labels is not None:
            labels.append(_label(spec, row[il], path, line))
    return TextPairs(task, text_a, text_b, labels)


def verify_md5sums(root: Path, relative: str) -> None:
    """If ``root/MD5SUMS`` lists ``relative`` (``md5sum``'s format), the file must match it."""
    sums = root / "MD5SUMS"
    if not sums.exists():
        return
    for line in sums.read_text().splitlines():
        expected, _, name = line.strip().partition("  ")
        if name == relative:
            actual = hashlib.md5((root / relative).read_bytes(), usedforsecurity=False).hexdigest()
            if actual != expected:
                raise ValueError(
                    f"{root / relative}: MD5 {actual} differs from {expected} in {sums}: the file "
                    "is truncated or corrupted"
                )
            return


def _label(spec: TaskSpec, raw: str, path: Path, line: int) -> float | int:
    try:
        if spec.regression:
            return float(raw)
        if spec.label_names is not None:
            return spec.label_names.index(raw)
        return int(raw)
    except ValueError:
        allowed = spec.label_names or ("a number",)
        raise ValueError(f"{path}, line {line}: label {raw!r} is not one of {allowed}") from None


def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean())


def f1_binary(pred, gold) -> float:
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp = float((pred & gold).sum())
    precision = tp / max(float(pred.sum()), 1.0)
    recall = tp / max(float(gold.sum()), 1.0)
    return 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)


def matthews(pred, gold) -> float:
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, tn = float((pred & gold).sum()), float((~pred & ~gold).sum())
    fp, fn = float((pred & ~gold).sum()), float((~pred & gold).sum())
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def glue_metrics(task: str, pred, gold) -> dict[str, float]:
    """The task's GLUE metrics for predictions (classes, or scores for STS-B) against gold labels."""
    spec = TASKS[task]
    out = {}
    for name in spec.metrics:
        if name == "accuracy":
            out[name] = accuracy(pred, gold)
        elif name == "f1":
            out[name] = f1_binary(pred, gold)
        elif name == "matthews":
            out[name] = matthews(pred, gold)
        elif name == "pearson":
            out[name] = float(stats.pearsonr(pred, gold)[0])
        elif name == "spearman":
            out[name] = float(stats.spearmanr(pred, gold)[0])
    return out
