"""Split the shipped transformer after its first layer(s) and train an early exit there.

    python3 -m guard.training.early_exit --data /work/shared/datasets --model models/ \
        --fp32 runs/guard.fp32.onnx

Without ``--fp32`` the model folder must already be split (as shipped): its front and
tail stay as they are and only the exit head is trained again, e.g. after the training
data changed; or, given a ``--layer`` other than where it was cut, the two int8 halves
are joined and cut again there (:func:`guard.training.cut.resplit`: the shipped v3's fp32
export is lost).

The transformer's fp32 export is cut in two at ``--layer``: ``guard.onnx`` (embeddings
and the first layers; outputs ``hidden`` and the expanded ``attention_bias``) and
``guard.tail.onnx`` (the remaining layers and both heads, from those and the attention
mask), each quantized to int8 as the whole model was, and its attention fused
(:mod:`guard.training.fastgraph`).  Front then tail computes what the whole model computed,
to float rounding for a text scored alone (the largest change on the dev split, scored in
batches, is recorded in exit.json).

A small head (``exit.onnx``: masked mean of ``hidden``, two layers) learns the
transformer's own harm probabilities (distillation) and the labels, on the training
prompts and unlabelled train/ text.  Its clear point is tuned on out-of-fold predictions
for the training prompts plus the dev split (``--folds`` heads, each trained without
the fold it predicts), so the quantile rests on thousands of harmful prompts rather
than the dev split's few hundred: at least ``--recall`` of the harmful prompts that the
transformer flags must go on to the tail.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn
from tqdm import tqdm

from guard.classifier.encoding import Window
from guard.classifier.labels import LABELS_FILE, MODEL_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model, session_options
from guard.classifier.sieve import (
    EXIT_FILE,
    EXIT_LABELS_FILE,
    MAX_CLEARABLE_TOKENS,
    TAIL_FILE,
    span_means,
)
from guard.training import data as data_mod
from guard.training import noise
from guard.training.cut import resplit, split
from guard.training.data import Example
from guard.training.fastgraph import drop_bias, fuse_file
from guard.training.files import sha256
from guard.training.model import HARM_OUTPUTS
from guard.training.sieve import _targets, tune_clear_point, unlabelled_texts


class ExitHead(nn.Module):
    """A two-layer harm head on a mean of the front's hidden states (pooled by the caller:
    the whole window and its spans, see guard.classifier.sieve.span_means)."""

    def __init__(self, hidden: int = 384, width: int = 256) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Linear(hidden, width), nn.GELU(), nn.Dropout(0.1), nn.Linear(width, HARM_OUTPUTS)
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)


@dataclass(frozen=True, slots=True)
class Pooled:
    """Front states pooled per window (what the head trains on) and per span (how it is served)."""

    whole: np.ndarray  # [windows, hidden]
    spans: np.ndarray  # [rows, hidden], whole-window rows included
    owner: np.ndarray  # [rows] window index of each span row


def fold_assignment(count: int, folds: int, seed: int) -> np.ndarray:
    """Each of ``count`` examples' fold, balanced and shuffled reproducibly."""
    fold_of = np.array([i % folds for i in range(count)])
    random.Random(seed).shuffle(fold_of)  # noqa: S311 - reproducible folds
    return fold_of


def pooled_states(
    session: ort.InferenceSession, predictor: Predictor, windows: list[Window]
) -> Pooled:
    """The (int8, as served) front's states for ``windows``, pooled as the runtime pools them."""
    encoder = predictor.model.encoder
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
    whole = np.zeros((len(windows), 384), dtype=np.float32)
    span_rows, owners = [], []
    for start in tqdm(range(0, len(order), 64), desc="front states"):
        rows = order[start : start + 64]
        batch = encoder.batch([windows[i] for i in rows])
        (hidden,) = session.run(
            ["hidden"],
            {
                "input_ids": batch.input_ids,
                "attention_mask": batch.attention_mask,
                "token_type_ids": batch.token_type_ids,
            },
        )
        pooled, owner = span_means(hidden, batch.attention_mask)
        local = np.asarray(rows)[owner]
        first = np.r_[True, owner[1:] != owner[:-1]]  # each window's first row is its whole
        whole[local[first]] = pooled[first]
        span_rows.append(pooled)
        owners.append(local)
    return Pooled(whole, np.concatenate(span_rows), np.concatenate(owners))


def fit_head(
    pooled: np.ndarray,
    target: torch.Tensor,
    mask: torch.Tensor,
    soft: torch.Tensor,
    epochs: int,
    seed: int,
) -> ExitHead:
    torch.manual_seed(seed)
    rng = random.Random(seed)  # noqa: S311 - reproducible shuffling, not security
    head = ExitHead(pooled.shape[1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-3)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    features = torch.from_numpy(pooled)
    order = list(range(len(pooled)))
    head.train()
    for _ in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), 128):
            rows = order[start : start + 128]
            logits = head(features[rows])
            losses = bce(logits, target[rows]) * mask[rows]
            weight = 1.0 + target[rows, 0]  # missing harm costs double
            risk_loss = (losses[:, 0] * weight).sum() / weight.sum()
            cat_weight = mask[rows, 1:] * (1.0 + 9.0 * target[rows, 1:])
            cat_loss = (losses[:, 1:] * cat_weight).sum() / mask[rows, 1:].sum().clamp(min=1.0)
            loss = risk_loss + 0.5 * cat_loss + bce(logits, soft[rows]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()
    return head


def _risk(head: ExitHead, pooled: Pooled, windows: np.ndarray | None = None) -> np.ndarray:
    """Served risk (max over spans) of ``windows`` (all when None)."""
    keep = np.ones(len(pooled.owner), bool) if windows is None else np.isin(pooled.owner, windows)
    with torch.no_grad():
        risk = torch.sigmoid(head(torch.from_numpy(pooled.spans[keep])))[:, 0].numpy()
    result = np.zeros(len(pooled.whole), dtype=np.float32)
    np.maximum.at(result, pooled.owner[keep], risk)
    return result if windows is None else result[windows]


def export_head(head: ExitHead, path: Path) -> None:
    """fp32 on purpose: 100k weights, and no per-batch activation scales (see sieve)."""
    sample = torch.zeros((2, 384))
    with torch.no_grad():
        torch.onnx.export(
            head,
            (sample,),
            str(path),
            input_names=["pooled"],
            output_names=["harm"],
            dynamic_axes={"pooled": {0: "rows"}, "harm": {0: "rows"}},
            opset_version=17,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument("--model", type=Path, default=Path("models"), help="shipped model dir")
    parser.add_argument(
        "--fp32",
        type=Path,
        default=None,
        help="the whole model's fp32 export, to split; without it --model must be split already",
    )
    parser.add_argument("--work", type=Path, default=Path("runs/early_exit"))
    parser.add_argument(
        "--layer",
        type=int,
        default=None,
        help="cut after this layer (default 1; a split model keeps its cut unless given)",
    )
    parser.add_argument("--recall", type=float, default=0.995)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--digit-noise",
        type=int,
        default=0,
        help="add N copies of training texts with a number put in (guard.training.noise); "
        "each is scored by the transformer as it stands, noise and all",
    )
    parser.add_argument(
        "--filler-noise",
        type=int,
        default=0,
        help="add N copies with a code, punctuation, smileys or a pleasantry put in",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.monotonic()

    # The teacher: the transformer alone (whole, or front then tail), no cheap stages.
    whole = load_model(args.model, intra_op_threads=args.threads)
    teacher = Predictor(whole)
    args.work.mkdir(parents=True, exist_ok=True)
    front_int8, tail_int8 = args.work / MODEL_FILE, args.work / TAIL_FILE
    kept = False
    previous = args.model / EXIT_LABELS_FILE
    made_at = (
        int(json.loads(previous.read_text(encoding="utf-8"))["layer"])
        if whole.tail is not None and previous.is_file()
        else None
    )
    if args.fp32 is not None:
        if whole.tail is not None:
            raise SystemExit(f"{args.model} is already split; leave out --fp32 to keep it so")
        args.layer = args.layer or 1
        front_fp32, tail_fp32 = split(args.fp32, args.layer, args.work)
        quantize_dynamic(str(front_fp32), str(front_int8), weight_type=QuantType.QInt8)
        quantize_dynamic(str(tail_fp32), str(tail_int8), weight_type=QuantType.QInt8)
    elif whole.tail is None:
        raise SystemExit(f"{args.model} holds the whole model; pass its --fp32 export to split it")
    elif args.layer is None or args.layer == made_at:  # the cut stays where it was made
        args.layer = made_at or 1
        shutil.copyfile(args.model / MODEL_FILE, front_int8)
        shutil.copyfile(args.model / TAIL_FILE, tail_int8)
        kept = True
    else:
        if made_at is None:
            raise SystemExit(f"{args.model} has no {EXIT_LABELS_FILE}: where it was cut is unknown")
        cut = resplit(args.model / MODEL_FILE, args.model / TAIL_FILE, args.layer, args.work)
        shutil.copyfile(cut[0], front_int8)
        shutil.copyfile(cut[1], tail_int8)
    # Halves kept as they are stay so (the shipped front is unfused on purpose: see the
    # model card); the head must learn the states it will be served.
    if not kept:
        for half in (front_int8, tail_int8):  # no-op for halves fused already
            fuse_file(half)
        drop_bias(front_int8, tail_int8)
    front = ort.InferenceSession(
        str(front_int8), session_options(args.threads), providers=["CPUExecutionProvider"]
    )

    train_examples, dev_examples = data_mod.load(args.data, seed=args.seed)
    prompts = [e for e in train_examples if not e.is_reply]
    dev = [e for e in dev_examples if not e.is_reply]
    extra = [Example(text=t, source="unlabelled") for t in unlabelled_texts(args.data / "train")]
    examples = prompts + extra
    encoder = whole.encoder
    windows = [w[0] for w in encoder.text_windows([e.text for e in examples], first_only=True)]
    dev_windows = [w[0] for w in encoder.text_windows([e.text for e in dev], first_only=True)]
    # A noisy copy keeps its text's label, gets the transformer's answer for the noisy text
    # (what the tail would say) and its source's fold, so no head predicts a copy of what
    # it was trained on.
    originals = len(examples)
    source = list(range(originals))
    for count, fillers in ((args.digit_noise, False), (args.filler_noise, True)):
        picks, noisy = noise.noisy_sample(
            windows[:originals], encoder, count, args.seed, fillers=fillers
        )
        windows += noisy
        examples += [examples[i] for i in picks]
        source += picks
    soft_np = 1.0 / (1.0 + np.exp(-teacher.run(windows).harm))
    dev_teacher = 1.0 / (1.0 + np.exp(-teacher.run(dev_windows).harm[:, 0]))
    pooled = pooled_states(front, teacher, windows)
    dev_pooled = pooled_states(front, teacher, dev_windows)
    target, mask = _targets(examples)
    soft = torch.from_numpy(soft_np.astype(np.float32))

    # Out-of-fold risk for every training prompt: each fold's head never saw it.
    fold_of = fold_assignment(originals, args.folds, args.seed)[source]
    oof = np.zeros(len(examples), dtype=np.float32)
    for fold in tqdm(range(args.folds), desc="out-of-fold heads"):
        inside = np.flatnonzero(fold_of != fold)
        head = fit_head(
            pooled.whole[inside], target[inside], mask[inside], soft[inside], args.epochs, fold
        )
        outside = np.flatnonzero(fold_of == fold)
        oof[outside] = _risk(head, pooled, outside)
    head = fit_head(pooled.whole, target, mask, soft, args.epochs, args.seed)
    dev_risk = _risk(head, dev_pooled)

    flag = whole.labels.thresholds.flag
    labelled = np.array([e.harmful is not None for e in examples])
    harmful = np.array([bool(e.harmful) for e in examples])
    dev_harmful = np.array([bool(e.harmful) for e in dev])
    caught = labelled & harmful & (soft_np[:, 0] >= flag)
    dev_caught = dev_harmful & (dev_teacher >= flag)
    clear_below = tune_clear_point(
        np.concatenate([oof[caught], dev_risk[dev_caught]]),
        np.ones(int(caught.sum() + dev_caught.sum()), dtype=bool),
        args.recall,
    )
    export_head(head, args.work / EXIT_FILE)

    # Install: front replaces the whole model, tail and head beside it.
    for path in (front_int8, tail_int8, args.work / EXIT_FILE):
        shutil.copyfile(path, args.model / path.name)
    labels = json.loads((args.model / LABELS_FILE).read_text(encoding="utf-8"))
    labels["model_sha256"] = sha256(args.model / MODEL_FILE)
    (args.model / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    benign_dev = ~dev_harmful
    short = np.array([len(w.ids) - 2 <= MAX_CLEARABLE_TOKENS for w in windows])
    dev_short = np.array([len(w.ids) - 2 <= MAX_CLEARABLE_TOKENS for w in dev_windows])
    passes = (oof >= clear_below) | ~short  # what reaches the tail, as served
    dev_passes = (dev_risk >= clear_below) | ~dev_short
    exit_labels = {
        "model_sha256": sha256(args.model / EXIT_FILE),
        "layer": args.layer,
        "clear_below": clear_below,
        "tuning": {
            "oof_model_caught_forwarded": round(float(passes[caught].mean()), 4),
            "oof_model_caught": float(caught.sum()),
            "dev_model_caught_forwarded": round(float(dev_passes[dev_caught].mean()), 4),
            "dev_harmful_forwarded": round(float(dev_passes[dev_harmful].mean()), 4),
            "dev_benign_cleared": round(float((~dev_passes[benign_dev]).mean()), 4),
            "train_texts": float(len(examples)),
            "wall_s": round(time.monotonic() - started, 1),
        },
    }
    (args.model / EXIT_LABELS_FILE).write_text(json.dumps(exit_labels, indent=2) + "\n")

    # The split must not change the transformer's answer.
    split_model = Predictor(load_model(args.model, intra_op_threads=args.threads))
    split_risk = split_model.harm_probabilities([e.text for e in dev])[:, 0]
    whole_risk = teacher.harm_probabilities([e.text for e in dev])[:, 0]
    exit_labels["tuning"]["dev_split_max_abs_diff"] = round(
        float(np.abs(split_risk - whole_risk).max()), 5
    )
    (args.model / EXIT_LABELS_FILE).write_text(json.dumps(exit_labels, indent=2) + "\n")
    print(json.dumps(exit_labels, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
