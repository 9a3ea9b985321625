"""A "model soup": one network whose weights are the mean of several fine-tuned runs.

    python3 -m guard.training.soup --data /work/shared/datasets --out SOUP --work SOUP_WORK \\
        --member V6_WORK --member V12_WORK --member V13_WORK --drop-source jailbreak_templates

Runs of one recipe that differ only in their seed start from the same pretrained
all-MiniLM-L6-v2 body and move little from it at this learning rate, so their weights stay
close enough to average (Wortsman et al., "Model soups", ICML 2022): the mean network costs
what one run costs to serve and tends to generalise at least as well as its members, where
each member alone carries its seed's quirks.  The heads are linear on mean-pooled states,
so averaging them is close to averaging the members' logits.

Each ``--member`` is a training ``--work`` folder (``guard.pt`` and ``labels.json``, as
:mod:`guard.training.train` leaves them).  Members must have the same layer count, window
and parameter shapes, or the command stops and says which differs.  The soup is exported,
quantized and given rule 1's thresholds on the dev split exactly as ``train`` does (pass the
members' ``--drop-source`` so the dev split matches theirs); place them by another rule with
:mod:`guard.training.retune`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from guard.classifier.encoding import Windowing
from guard.classifier.labels import LABELS_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.training import data as data_mod
from guard.training.files import CHECKPOINT_FILE
from guard.training.model import GuardClassifier
from guard.training.thresholds import tune_thresholds
from guard.training.train import write_labels, write_model

_SHAPE_KEYS = ("layers", "max_length", "stride")


def mean_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes.

    Raises ValueError naming the first key whose presence or shape differs; integer
    buffers (position ids) must be equal in every member and are kept as they are.
    """
    if not states:
        raise ValueError("a soup needs at least one member")
    first = states[0]
    for index, state in enumerate(states[1:], start=2):
        if state.keys() != first.keys():
            odd = sorted(state.keys() ^ first.keys())[0]
            raise ValueError(f"member {index} differs from member 1 in parameter {odd!r}")
        for key, tensor in state.items():
            if tensor.shape != first[key].shape:
                raise ValueError(
                    f"member {index}: {key!r} has shape {tuple(tensor.shape)}, "
                    f"member 1 {tuple(first[key].shape)}"
                )
    mean: dict[str, torch.Tensor] = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            mean[key] = torch.stack([s[key] for s in states]).mean(dim=0)
        elif all(torch.equal(s[key], tensor) for s in states):
            mean[key] = tensor.clone()
        else:
            raise ValueError(f"integer buffer {key!r} differs between members")
    return mean


def _member_labels(work: Path) -> dict[str, object]:
    path = work / LABELS_FILE
    if not (work / CHECKPOINT_FILE).is_file() or not path.is_file():
        raise FileNotFoundError(
            f"{work} holds no {CHECKPOINT_FILE} and {LABELS_FILE} (a train --work)"
        )
    labels: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--work", type=Path, required=True, help="scratch: fp32 export, checkpoint")
    parser.add_argument(
        "--member",
        type=Path,
        action="append",
        required=True,
        help="a train --work folder (guard.pt, labels.json); repeat for each member",
    )
    parser.add_argument(
        "--drop-source",
        action="append",
        default=[],
        help="the members' --drop-source, so that the dev split matches theirs",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if len(args.member) < 2:
        parser.error("a soup needs at least two --member folders")
    started = time.monotonic()
    members = [_member_labels(work) for work in args.member]
    shapes = [{key: int(str(labels[key])) for key in _SHAPE_KEYS} for labels in members]
    for work, shape in zip(args.member[1:], shapes[1:], strict=True):
        if shape != shapes[0]:
            parser.error(f"{work}: {shape} differs from {args.member[0]}: {shapes[0]}")
    states = [torch.load(work / CHECKPOINT_FILE, map_location="cpu") for work in args.member]
    model = GuardClassifier.from_base(shapes[0]["layers"])
    model.load_state_dict(mean_state(states))
    windowing = Windowing(max_length=shapes[0]["max_length"], stride=shapes[0]["stride"])
    _, labels = write_model(
        model, args.out, args.work, windowing, f"-L{shapes[0]['layers']}S", shapes[0]["layers"]
    )
    _, dev = data_mod.load(args.data, drop_sources=frozenset(args.drop_source))
    predictor = Predictor(load_model(args.out, intra_op_threads=args.threads))
    flag, block, stats = tune_thresholds(predictor, dev)
    stats["members"] = float(len(args.member))
    stats["soup_wall_s"] = round(time.monotonic() - started, 1)
    labels["thresholds"] = {"flag": flag, "block": block}
    labels["tuning"] = stats
    labels["soup_of"] = [member["model_version"] for member in members]
    write_labels(labels, args.out, args.work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
