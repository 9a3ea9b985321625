"""Train the cascade's cheap first stage: a static-embedding harm sieve.

    python3 -m guard.training.sieve --data /work/shared/datasets --out models/

The sieve reads a window as the mean of per-token vectors and runs a two-layer head on
it: no attention, so a 64-token turn costs a table lookup and two small matrix products
instead of four transformer layers.  It only ever *clears* text: a window whose sieve risk
is below ``clear_below`` is reported as benign without the transformer; everything else
goes to the transformer as before.  ``clear_below`` is tuned on the dev split of train/
so that the sieve forwards at least ``--recall`` of the harmful dev prompts that the
transformer itself flags (what the transformer would miss anyway is not the sieve's loss).

Token vectors start from all-MiniLM-L6-v2 itself (model2vec-style distillation: every
vocabulary token is run through the encoder alone, the outputs mean-pooled, then reduced
by PCA to ``--dim``) and are fine-tuned with the head.  Targets: the labels of the
transformer's training prompts *and* the shipped transformer's own probabilities
(distillation), on those prompts plus unlabelled train/ text (hh-rlhf red-team openers,
all of gsm8k), so the sieve learns where the transformer draws its line.  Writes
``sieve.onnx`` (int8) and ``sieve.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from guard.classifier.encoding import Encoder, Windowing
from guard.classifier.labels import TOKENIZER_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model, load_sieve
from guard.classifier.sieve import MAX_CLEARABLE_TOKENS, SIEVE_FILE, SIEVE_LABELS_FILE
from guard.scoring import HAZARDS
from guard.training import data as data_mod
from guard.training.data import Example
from guard.training.files import sha256
from guard.training.model import HARM_OUTPUTS, base_model_dir


def distilled_vectors(dim: int, batch_size: int = 512) -> np.ndarray:
    """[vocab, dim] token vectors: MiniLM's pooled output for each token alone, PCA-reduced."""
    from transformers import BertModel

    encoder = BertModel.from_pretrained(base_model_dir(), add_pooling_layer=False).eval()
    tokenizer = Tokenizer.from_file(str(base_model_dir() / TOKENIZER_FILE))
    vocab = tokenizer.get_vocab_size()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    pooled = np.zeros((vocab, encoder.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in tqdm(range(0, vocab, batch_size), desc="distil token vectors"):
            ids = torch.arange(start, min(start + batch_size, vocab))
            batch = torch.stack(
                [torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1
            )
            hidden = encoder(
                input_ids=batch, attention_mask=torch.ones_like(batch)
            ).last_hidden_state
            pooled[start : start + len(ids)] = hidden.mean(dim=1).numpy()
    centred = pooled - pooled.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    reduced = centred @ components[:dim].T
    reduced /= reduced.std() + 1e-6
    return reduced.astype(np.float32)


class HarmSieve(nn.Module):
    """Mean of token vectors over the window, then a two-layer head (risk + hazards)."""

    def __init__(self, vectors: np.ndarray, hidden: int = 256) -> None:
        super().__init__()
        self.embeddings = nn.Embedding.from_pretrained(torch.from_numpy(vectors), freeze=False)
        dim = vectors.shape[1]
        self.head = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, HARM_OUTPUTS)
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        summed = (self.embeddings(input_ids) * mask).sum(dim=1)
        return self.head(summed / mask.sum(dim=1).clamp(min=1.0))


def unlabelled_texts(train_dir: Path) -> list[str]:
    """train/ user text without a harm label, outside the dev split: the teacher's
    judgement is the only target."""
    texts = []
    for line in (train_dir / "hh_rlhf_harmless_base/hh_rlhf_harmless_base.norm.jsonl").open():
        messages = json.loads(line)["messages"]
        if messages and messages[0]["role"] == "user":
            texts.append(str(messages[0]["content"]))
    for line in (train_dir / "gsm8k/train.jsonl").open():
        texts.append(str(json.loads(line)["question"]))
    return [text for text in texts if not data_mod.is_dev(Example(text=text, source=""))]


def _targets(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros((len(examples), HARM_OUTPUTS))
    mask = torch.zeros((len(examples), HARM_OUTPUTS))
    for row, example in enumerate(examples):
        if example.harmful is None:
            continue
        target[row, 0] = 1.0 if example.harmful else 0.0
        mask[row, 0] = 1.0
        if not example.harmful or example.category is not None:
            mask[row, 1:] = 1.0
            if example.harmful and example.category is not None:
                target[row, 1 + HAZARDS.index(example.category)] = 1.0
    return target, mask


def train_sieve(
    args: argparse.Namespace,
    encoder: Encoder,
    examples: list[Example],
    teacher: np.ndarray,
    vectors: np.ndarray,
) -> HarmSieve:
    """``teacher``: the transformer's probabilities for each example's first window."""
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)  # noqa: S311 - reproducible shuffling, not security
    windows = [w[0] for w in encoder.text_windows([e.text for e in examples], first_only=True)]
    target, mask = _targets(examples)
    soft = torch.from_numpy(teacher)
    model = HarmSieve(vectors)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.embeddings.parameters(), "lr": args.lr},
            {"params": model.head.parameters(), "lr": args.lr},
        ],
        weight_decay=0.0,
    )
    bce = nn.BCEWithLogitsLoss(reduction="none")
    order = list(range(len(examples)))
    steps = math.ceil(len(order) / args.batch_size) * args.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    model.train()
    for epoch in range(args.epochs):
        rng.shuffle(order)
        progress = tqdm(
            range(0, len(order), args.batch_size), desc=f"sieve epoch {epoch + 1}/{args.epochs}"
        )
        for start in progress:
            rows = order[start : start + args.batch_size]
            batch = encoder.batch([windows[i] for i in rows])
            logits = model(
                torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
            )
            losses = bce(logits, target[rows]) * mask[rows]
            # The sieve must not miss harm: harmful examples weigh double on the risk column.
            weight = 1.0 + target[rows, 0]
            risk_loss = (losses[:, 0] * weight).sum() / weight.sum()
            cat_weight = mask[rows, 1:] * (1.0 + 9.0 * target[rows, 1:])
            cat_loss = (losses[:, 1:] * cat_weight).sum() / mask[rows, 1:].sum().clamp(min=1.0)
            distil = bce(logits, soft[rows]).mean()
            loss = risk_loss + 0.5 * cat_loss + args.distil * distil
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            progress.set_postfix(loss=f"{float(loss):.3f}")
    model.eval()
    return model


def export(model: HarmSieve, fp32_path: Path, int8_path: Path) -> None:
    sample = torch.ones((2, 16), dtype=torch.long)
    fp32_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (sample, sample),
            str(fp32_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["harm"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "harm": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    onnx.checker.check_model(str(fp32_path))
    # The token table is 95% of the weights: quantizing the Gather (weights only) is what
    # makes the file small.  The head's MatMuls stay fp32: dynamic quantization would pick
    # activation scales per batch, and a text's sieve score, hence whether the transformer
    # sees it, must not depend on which other texts share its batch.
    quantize_dynamic(
        str(fp32_path),
        str(int8_path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Gather"],
    )


def tune_clear_point(risk: np.ndarray, harmful: np.ndarray, recall: float) -> float:
    """The highest clear point that still forwards ``recall`` of the harmful dev prompts."""
    harmful_risk = np.sort(risk[harmful])
    if not len(harmful_risk):
        return 0.0
    # Below the k-th lowest harmful score, at most k-1 harmful prompts are cleared.
    allowed_misses = math.floor((1.0 - recall) * len(harmful_risk))
    return float(harmful_risk[allowed_misses])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument(
        "--out", type=Path, default=Path("models"), help="model dir (has labels.json)"
    )
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--recall", type=float, default=0.995, help="share of model-flagged harmful dev forwarded"
    )
    parser.add_argument("--distil", type=float, default=1.0, help="weight of the teacher's loss")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.monotonic()

    train_examples, dev_examples = data_mod.load(args.data, seed=args.seed)
    train_prompts = [e for e in train_examples if not e.is_reply]
    dev_prompts = [e for e in dev_examples if not e.is_reply]
    labels = json.loads((args.out / "labels.json").read_text(encoding="utf-8"))
    windowing = Windowing(labels["max_length"], labels["stride"], labels["reply_prompt_tokens"])
    encoder = Encoder(Tokenizer.from_file(str(args.out / TOKENIZER_FILE)), windowing)

    # The teacher is the transformer in --out, judged on exactly the windows the sieve sees.
    teacher = Predictor(load_model(args.out, intra_op_threads=args.threads))
    extra = [Example(text=t, source="unlabelled") for t in unlabelled_texts(args.data / "train")]
    examples = train_prompts + extra
    first = [w[0] for w in encoder.text_windows([e.text for e in examples], first_only=True)]
    soft = 1.0 / (1.0 + np.exp(-teacher.run(first).harm))
    vectors = distilled_vectors(args.dim)
    model = train_sieve(args, encoder, examples, soft.astype(np.float32), vectors)
    export(model, args.work / "sieve.fp32.onnx", args.out / SIEVE_FILE)

    # Tune on the int8 model as served, through the runtime loader.
    sieve_labels = {
        "model_sha256": sha256(args.out / SIEVE_FILE),
        "dim": args.dim,
        "clear_below": 0.0,
        "tuning": {},
    }
    (args.out / SIEVE_LABELS_FILE).write_text(json.dumps(sieve_labels, indent=2) + "\n")
    sieve = load_sieve(args.out, intra_op_threads=args.threads)
    windows = [w[0] for w in encoder.text_windows([e.text for e in dev_prompts], first_only=True)]
    risk = sieve.window_probabilities(windows, encoder)[:, 0]
    harmful = np.array([bool(e.harmful) for e in dev_prompts])
    model_risk = teacher.harm_probabilities([e.text for e in dev_prompts])[:, 0]
    caught = harmful & (model_risk >= teacher.model.labels.thresholds.flag)
    clear_below = tune_clear_point(risk, caught, args.recall)
    lengths = np.array([len(w.ids) - 2 for w in windows])
    cleared = (risk < clear_below) & (lengths <= MAX_CLEARABLE_TOKENS)
    sieve_labels["clear_below"] = clear_below
    sieve_labels["tuning"] = {
        "dev_prompts": float(len(dev_prompts)),
        "dev_model_caught_forwarded": round(float((~cleared[caught]).mean()), 4),
        "dev_harmful_forwarded": round(float((~cleared[harmful]).mean()), 4),
        "dev_benign_cleared": round(float(cleared[~harmful].mean()), 4),
        "train_texts": float(len(examples)),
        "epochs": float(args.epochs),
        "train_wall_s": round(time.monotonic() - started, 1),
    }
    (args.out / SIEVE_LABELS_FILE).write_text(json.dumps(sieve_labels, indent=2) + "\n")
    print(json.dumps(sieve_labels, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
