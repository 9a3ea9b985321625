"""Build the shipped classifier end to end.

    python3 -m guard.training.train --data /work/shared/datasets --out models/

Data assembly (guard.training.data), multi-task fine-tuning of the first ``--layers``
layers of all-MiniLM-L6-v2, ONNX export, int8 dynamic quantization, threshold tuning on
the dev split carved from train/, and labels.json.  The fp32 export is kept in
``--work`` (default runs/) for the speed benchmark; only the int8 model ships.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from guard.classifier.encoding import Encoder, Windowing
from guard.classifier.labels import LABELS_FILE, MODEL_FILE, TOKENIZER_FILE, load_labels
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.scoring import HAZARDS
from guard.training import data as data_mod
from guard.training import noise
from guard.training.batches import Encoded, batches, encode, tensors, unlabelled
from guard.training.data import REFUSAL_CLASSES
from guard.training.distil import distillation_loss, teacher_logits
from guard.training.export import export_fp32, quantize_int8
from guard.training.files import CHECKPOINT_FILE, HOLDOUT_FILE, sha256
from guard.training.model import GuardClassifier, Pooling, base_model_dir
from guard.training.thresholds import tune_thresholds

IMPORTANCE_WINDOWS = 2048  # sample windows that rank feed-forward units (--intermediate)


def initial_model(
    args: argparse.Namespace, encoder: Encoder, train: list[Encoded]
) -> GuardClassifier:
    """all-MiniLM-L6-v2's first layers, or a student cut from a trained int8 model."""
    pool = Pooling(args.pool_after, args.pool_stride)
    if args.init_from is None:
        return GuardClassifier.from_base(args.layers, pool)
    from guard.training.compress import student_from

    sample = random.Random(args.seed).sample(train, min(IMPORTANCE_WINDOWS, len(train)))  # noqa: S311 - reproducible sampling, not security
    return student_from(
        args.init_from,
        args.layers,
        args.intermediate,
        encoder,
        [e.window for e in sample],
        pool,
    )


def train_model(
    args: argparse.Namespace, encoder: Encoder, train: list[Encoded]
) -> GuardClassifier:
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)  # noqa: S311 - reproducible sampling, not security
    model = initial_model(args, encoder, train)
    # The 30k x 384 word embeddings are 60% of the weights; freezing them halves optimizer
    # work on a CPU budget and keeps rare-token embeddings from drifting on small data.
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    head_params = [*model.harm.parameters(), *model.refusal.parameters()]
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": body_params, "lr": args.lr}, {"params": head_params, "lr": args.lr * 10}],
        weight_decay=0.01,
    )
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, int(0.06 * total))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    counts = np.bincount(
        [e.refusal for e in train if e.refusal is not None], minlength=len(REFUSAL_CLASSES)
    )
    class_weight = torch.tensor(
        np.sqrt(counts.sum() / np.maximum(counts, 1) / len(counts)), dtype=torch.float
    )
    cross_entropy = nn.CrossEntropyLoss(weight=class_weight, ignore_index=-100)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    model.train()
    for epoch in range(args.epochs):
        progress = tqdm(
            batches(train, args.batch_size, rng), desc=f"epoch {epoch + 1}/{args.epochs}"
        )
        running = 0.0
        for step, batch in enumerate(progress):
            t = tensors(encoder, batch)
            harm_logits, refusal_logits = model(
                t["input_ids"], t["attention_mask"], t["token_type_ids"]
            )
            harm_loss = bce(harm_logits, t["harm_target"]) * t["harm_mask"]
            # risk column weighted 1, categories together weighted 1 (averaged over 15)
            risk_loss = harm_loss[:, 0].sum() / t["harm_mask"][:, 0].sum().clamp(min=1)
            # One positive against 14 negatives per harmful example: weight positives so the
            # category head does not collapse onto the most common category.
            cat_weight = t["harm_mask"][:, 1:] * (1.0 + 9.0 * t["harm_target"][:, 1:])
            cat_loss = (harm_loss[:, 1:] * cat_weight).sum() / t["harm_mask"][:, 1:].sum().clamp(
                min=1
            )
            loss = risk_loss + cat_loss
            if (t["refusal_target"] >= 0).any():
                loss = loss + cross_entropy(refusal_logits, t["refusal_target"])
            if args.teacher is not None:
                loss = (1 - args.distil) * loss + args.distil * distillation_loss(
                    t, harm_logits, refusal_logits, args.temperature
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            running = 0.98 * running + 0.02 * float(loss) if step else float(loss)
            progress.set_postfix(loss=f"{running:.3f}")
    model.eval()
    return model


def write_model(
    model: GuardClassifier,
    out: Path,
    work: Path,
    windowing: Windowing,
    shape: str,
    layers: int,
) -> tuple[Path, dict[str, object]]:
    """Checkpoint and fp32 export in ``work``, int8 model, tokenizer and labels.json in ``out``.

    The labels carry placeholder thresholds (0.5); the caller places them.  Returns the
    fp32 export's path and the labels as written.
    """
    work.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), work / CHECKPOINT_FILE)
    fp32 = export_fp32(model, work / "guard.fp32.onnx")
    out.mkdir(parents=True, exist_ok=True)
    int8 = quantize_int8(fp32, out / MODEL_FILE)
    tokenizer_src = base_model_dir() / TOKENIZER_FILE
    shutil.copyfile(tokenizer_src, out / TOKENIZER_FILE)
    shutil.copyfile(tokenizer_src, work / TOKENIZER_FILE)
    labels: dict[str, object] = {
        "model_version": time.strftime("%Y%m%d-%H%M", time.gmtime()) + shape,
        "model_sha256": sha256(int8),
        "hazards": list(HAZARDS),
        "refusal_classes": list(REFUSAL_CLASSES),
        "max_length": windowing.max_length,
        "stride": windowing.stride,
        "reply_prompt_tokens": windowing.reply_prompt_tokens,
        "thresholds": {"flag": 0.5, "block": 0.5},
        "layers": layers,
    }
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    return fp32, labels


def write_labels(labels: dict[str, object], out: Path, work: Path) -> None:
    """The finished labels.json (thresholds placed) in ``out``, a copy in ``work``; printed."""
    text = json.dumps(labels, indent=2) + "\n"
    (out / LABELS_FILE).write_text(text, encoding="utf-8")
    (work / LABELS_FILE).write_text(text, encoding="utf-8")
    print(text, end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument(
        "--work", type=Path, default=Path("runs"), help="scratch: fp32 export, checkpoint"
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is robust on a shared CPU)"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--cascade",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then train the sieve and split the model for the early exit (guard.classifier.sieve)",
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="use only N training examples (smoke test)"
    )
    parser.add_argument(
        "--teacher", type=Path, default=None, help="model dir to distil from (e.g. a larger model)"
    )
    parser.add_argument(
        "--holdout-fold",
        type=int,
        default=None,
        help="cross-fitting: leave out this fold's written benign kinds (see --folds)",
    )
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--distil", type=float, default=0.5, help="weight of the teacher's loss")
    parser.add_argument(
        "--unlabelled",
        type=int,
        default=0,
        help="with --teacher: add this many unlabelled train/ user texts, teacher-scored",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this int8 model folder's weights instead of all-MiniLM-L6-v2 "
        "(guard.training.compress)",
    )
    parser.add_argument(
        "--intermediate",
        type=int,
        default=None,
        help="with --init-from: keep this many feed-forward units per layer (most important)",
    )
    parser.add_argument(
        "--thresholds-from",
        type=Path,
        default=None,
        help="keep this model folder's flag and block points (a distilled student: the dev "
        "split does not place a new model's thresholds, see the model card)",
    )
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument(
        "--pool-after",
        type=int,
        default=None,
        help="merge neighbouring token states after this layer, so the later layers run on "
        "a shorter sequence (guard.training.model.TokenPool)",
    )
    parser.add_argument(
        "--pool-stride", type=int, default=2, help="with --pool-after: states merged into one"
    )
    parser.add_argument(
        "--drop-source",
        action="append",
        default=[],
        help="leave out every example of this source (e.g. jailbreak_templates); repeatable",
    )
    parser.add_argument(
        "--template-pairs",
        nargs="?",
        const="replace",
        default="",
        choices=["replace", "add"],
        help="jailbreak templates' openings paired with a harmful and a benign request, "
        "in place of the templates (replace, the default) or beside them (add)",
    )
    parser.add_argument(
        "--personas",
        nargs="?",
        const="both",
        default="",
        choices=["both", "benign"],
        help="add the repo's role-play and instruction-heavy prompts "
        "(guard/training/personas.py): benign and harmful (both, the default) or benign only",
    )
    parser.add_argument(
        "--digit-noise",
        type=int,
        default=0,
        help="add N copies of training prompts with a number put in (guard.training.noise)",
    )
    parser.add_argument(
        "--filler-noise",
        type=int,
        default=0,
        help="add N copies with a code, punctuation, smileys or a pleasantry put in",
    )
    args = parser.parse_args(argv)
    if args.unlabelled and args.teacher is None:
        parser.error("--unlabelled needs --teacher (the teacher's scores are their only target)")
    if args.intermediate is not None and args.init_from is None:
        parser.error("--intermediate needs --init-from (units are ranked on a trained model)")
    torch.set_num_threads(args.threads)
    started = time.monotonic()

    held = (
        data_mod.fold_kinds(args.holdout_fold, args.folds)
        if args.holdout_fold is not None
        else frozenset()
    )
    train_examples, dev_examples = data_mod.load(
        args.data,
        seed=args.seed,
        holdout_kinds=held,
        drop_sources=frozenset(args.drop_source),
        template_pairs=args.template_pairs,
        personas=args.personas,
    )
    if args.limit:
        random.Random(args.seed).shuffle(train_examples)  # noqa: S311 - reproducible sampling, not security
        train_examples = train_examples[: args.limit]
    print(
        f"train {data_mod.describe(train_examples)}\ndev {data_mod.describe(dev_examples)}",
        flush=True,
    )

    windowing = Windowing(max_length=args.max_length, stride=args.stride)
    tokenizer_src = base_model_dir() / TOKENIZER_FILE
    encoder = Encoder(Tokenizer.from_file(str(tokenizer_src)), windowing)
    encoded = encode(encoder, train_examples)
    if args.teacher is not None:
        encoded += unlabelled(encoder, args.data, args.unlabelled, args.seed)
        logits = teacher_logits(
            args.teacher, [e.window for e in encoded], [e.prompt for e in encoded], args.threads
        )
        encoded = [replace(e, teacher=t) for e, t in zip(encoded, logits, strict=True)]
    prompts = [e for e in encoded if e.prompt]
    for count, fillers in ((args.digit_noise, False), (args.filler_noise, True)):
        # After the teacher: a noisy copy keeps its clean window's label and logits.
        picks, noisy = noise.noisy_sample(
            [e.window for e in prompts], encoder, count, args.seed, fillers=fillers
        )
        encoded += [replace(prompts[i], window=w) for i, w in zip(picks, noisy, strict=True)]
    model = train_model(args, encoder, encoded)

    shape = f"-L{args.layers}" + (f"F{args.intermediate}" if args.intermediate else "")
    shape += Pooling(args.pool_after, args.pool_stride).suffix
    fp32, labels = write_model(model, args.out, args.work, windowing, shape, args.layers)
    if held:  # beside the label map, whose schema the runtime checks strictly
        holdout = {"fold": args.holdout_fold, "folds": args.folds, "holdout_kinds": sorted(held)}
        (args.out / HOLDOUT_FILE).write_text(json.dumps(holdout, indent=2) + "\n")
    predictor = Predictor(load_model(args.out, intra_op_threads=args.threads))
    flag, block, stats = tune_thresholds(predictor, dev_examples)
    stats["train_examples"] = float(len(train_examples))
    stats["epochs"] = float(args.epochs)
    stats["train_wall_s"] = round(time.monotonic() - started, 1)
    if args.thresholds_from is not None:
        kept = load_labels(args.thresholds_from).thresholds
        stats["dev_tuned_flag"], stats["dev_tuned_block"] = flag, block
        flag, block = kept.flag, kept.block
    labels["thresholds"] = {"flag": flag, "block": block}
    labels["tuning"] = stats
    write_labels(labels, args.out, args.work)
    if args.cascade:
        # The cheap stages learn from this model, so they are rebuilt with it.
        from guard.training import early_exit, sieve

        common = ["--data", str(args.data), "--threads", str(args.threads)]
        sieve.main([*common, "--out", str(args.out), "--work", str(args.work)])
        early_exit.main(
            [*common, "--model", str(args.out), "--fp32", str(fp32), "--work", str(args.work)]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
