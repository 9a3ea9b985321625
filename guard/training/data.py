"""Assembling the training set from ``<data>/train`` and the repo's own examples.

Every example is either a *prompt* (user-side text; trains the harm head) or a *reply*
(a prompt/reply pair; trains the refusal head).  Per-source decisions, in one place:

harmful prompts
    advbench behaviours and strings, HarmBench validation behaviours, jailbreak_llms
    forbidden questions (8 of 13 policies; see ``taxonomy.FORBIDDEN_QUESTIONS_EXCLUDED``),
    in-the-wild jailbreak templates (harmful, category unknown: category loss masked),
    JailbreakBench PAIR adversarial prompts, the *last* user turn of each ActorAttack
    conversation, and the repo's templated harmful prompts and short direct contrasts.
benign prompts
    self_instruct, vicuna_bench, oasst1, gsm8k (subsampled), humaneval, CyberSecEval
    false-refusal prompts (train half), MT-Bench-101 user turns, tom-gibbs conversations
    (user turns joined) and single tom-gibbs turns, the *first* ActorAttack turn (an
    innocuous opener) and the repo's benign lookalikes and contrast prompts (repeated:
    they are few and they are what keeps false positives down).
    hh-rlhf first turns are not used for the harm head: intent varies and is unlabelled.
replies
    the repo's templated bare/reasoned/partial/compliance replies (two generations: fixed
    phrases, and varied openings/reasons/redirects); JailbreakBench responses
    and hh-rlhf first assistant replies typed by :func:`weak_refusal_label`; benign answers
    (gsm8k, humaneval, self_instruct, MT-Bench-101) as compliance.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from guard.classifier.encoding import plain_quotes
from guard.scoring import HAZARDS, Refusal
from guard.training import taxonomy
from guard.training.synthetic import DATA_DIR

REFUSAL_CLASSES: tuple[str, ...] = tuple(r.value for r in Refusal)  # none, bare, reasoned, partial

# How much of the larger benign sources to sample (CPU budget versus false positives:
# v2 used 350 / 500 / 250 / 0 and flagged benign multi-turn chat at single turns).
GSM8K_PROMPTS = 500
MTBENCH101_TURNS = 1500
TOMGIBBS_JOINED = 300
TOMGIBBS_TURNS = 300

# Dev-split sources whose benign prompts are *hard* (look harmful or are real chat turns);
# the flag threshold is tuned on their false-positive rate (thresholds.tune_thresholds).
HARD_BENIGN_SOURCES = frozenset(
    {"repo_benign", "repo_persona", "purplellama_frr", "tomgibbs", "mtbench101"}
)

csv.field_size_limit(10_000_000)


@dataclass(frozen=True, slots=True)
class Example:
    """One training example; ``harmful``/``category`` for prompts, ``refusal`` for replies."""

    text: str
    source: str
    pair: str | None = None
    harmful: bool | None = None
    category: str | None = None  # None on a harmful prompt = category unknown (masked)
    refusal: str | None = None

    @property
    def is_reply(self) -> bool:
        return self.pair is not None


# The repo's own example files this loader reads; guard.training.synthetic writes them
# (tests/training/test_synthetic.py checks that the two lists agree).
REPO_FILES = (
    "harmful_prompts.jsonl",
    "benign_lookalikes.jsonl",
    "replies.jsonl",
    "contrast_harmful.jsonl",
    "contrast_benign.jsonl",
    "replies_varied.jsonl",
    "personas_benign.jsonl",
    "personas_harmful.jsonl",
)


def _repo(name: str) -> Iterator[dict[str, object]]:
    """Rows of one of :data:`REPO_FILES`."""
    if name not in REPO_FILES:
        raise ValueError(f"{name} is not one of the repo's example files {REPO_FILES}")
    return _jsonl(DATA_DIR / name)


def _jsonl(path: Path) -> Iterator[dict[str, object]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _csv(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def _harm(text: str, source: str, category: str | None) -> Example:
    assert category is None or category in HAZARDS, category
    return Example(text=text.strip(), source=source, harmful=True, category=category)


def _benign(text: str, source: str) -> Example:
    return Example(text=text.strip(), source=source, harmful=False)


def _reply(prompt: str, reply: str, source: str, refusal: str) -> Example:
    assert refusal in REFUSAL_CLASSES, refusal
    return Example(text=prompt.strip(), pair=reply.strip(), source=source, refusal=refusal)


# --- weak refusal labels ---------------------------------------------------------------

_REFUSAL_CUE = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry|i apologi[sz]e|my apologies|i can(no|')t|i won'?t|"
    r"i will not|i'?m not able|i am not able|i'?m unable|i am unable|as an ai|as a language model|"
    r"i must (respectfully )?decline|i don'?t think i (can|should)|i'?m not comfortable|"
    r"i do not feel comfortable|it is not appropriate|it'?s not appropriate|no[,.!])",
    re.IGNORECASE,
)
_REASON_CUE = re.compile(
    r"because|harm|illegal|unethical|ethical|dangerous|against|polic(y|ies)|safety|respect|"
    r"privacy|inappropriate|offensive|hurt|abuse|violat|consent|discriminat|law",
    re.IGNORECASE,
)
_CONTENT_AFTER_REFUSAL = re.compile(
    r"(however|that said|but)[^.]{0,40}(here is|here's|here are|steps?|you (could|can|would))|"
    r"\n\s*(1\.|step 1|\*\*step)",
    re.IGNORECASE,
)


def weak_refusal_label(reply: str, complied: bool | None = None) -> str | None:
    """Heuristic reply type for unlabelled replies; ``None`` when too ambiguous to use.

    A reply refuses if it *opens* with a refusal phrase; it is partial if content follows
    the refusal (a "however, here is" turn or a numbered list) or a judge says it complied;
    otherwise reasoned if its first two sentences name a harm, law, policy or value, else
    bare.  ``complied`` is an external judge's verdict where one exists (JailbreakBench).
    """
    reply = plain_quotes(reply)  # hh-rlhf writes "I can’t": the cues are spelt with "'"
    head = reply.strip()[:400]
    if not _REFUSAL_CUE.search(head):
        if complied is False:
            return None  # deflection without refusal words: ambiguous
        return Refusal.NONE.value
    if complied or _CONTENT_AFTER_REFUSAL.search(reply[:1500]):
        return Refusal.PARTIAL.value
    first_sentences = " ".join(re.split(r"(?<=[.!?])\s+", head)[:2])
    return Refusal.REASONED.value if _REASON_CUE.search(first_sentences) else Refusal.BARE.value


# --- sources ---------------------------------------------------------------------------


def harmful_prompts(train: Path, rng: random.Random) -> Iterator[Example]:
    for row in _csv(train / "advbench/harmful_behaviors.csv"):
        yield _harm(row["goal"], "advbench_behaviors", taxonomy.keyword_category(row["goal"]))
    for row in _csv(train / "advbench/harmful_strings.csv"):
        yield _harm(row["target"], "advbench_strings", taxonomy.keyword_category(row["target"]))
    for row in _csv(train / "harmbench/harmbench_behaviors_text_val.csv"):
        text = row["Behavior"]
        category = taxonomy.map_category(taxonomy.HARMBENCH, row["SemanticCategory"], text)
        yield _harm(text, "harmbench_val", category)
        if row.get("ContextString"):
            yield _harm(row["ContextString"][:600] + "\n\n" + text, "harmbench_val_ctx", category)
    for row in _csv(train / "jailbreak_llms/forbidden_question_set.csv"):
        policy = row["content_policy_name"]
        if policy in taxonomy.FORBIDDEN_QUESTIONS_EXCLUDED:
            continue
        text = row["question"]
        yield _harm(
            text,
            "forbidden_questions",
            taxonomy.map_category(taxonomy.FORBIDDEN_QUESTIONS, policy, text),
        )
    templates: list[str] = []
    for name in ("jailbreak_prompts_2023_05_07.csv", "jailbreak_prompts_2023_12_25.csv"):
        templates.extend(row["prompt"] for row in _csv(train / "jailbreak_llms" / name))
    unique = sorted(set(templates))
    rng.shuffle(unique)
    for text in unique[:700]:
        yield _harm(text, "jailbreak_templates", None)
    seen: set[str] = set()
    for path in sorted(glob.glob(str(train / "jbb_artifacts/attack-artifacts/PAIR/*/*.json"))):
        for item in json.loads(Path(path).read_text(encoding="utf-8"))["jailbreaks"]:
            prompt = item.get("prompt")
            if not prompt or prompt in seen:
                continue
            seen.add(prompt)
            yield _harm(
                prompt, "jbb_pair", taxonomy.map_category(taxonomy.JBB, item["category"], prompt)
            )
    for conv in _jsonl(train / "multiturn/actorattack.norm.jsonl"):
        users = [m["content"] for m in conv["messages"] if m["role"] == "user"]  # type: ignore[attr-defined,index]
        if users:
            last = str(users[-1])
            yield _harm(
                last,
                "actorattack_last",
                taxonomy.map_category(taxonomy.ACTORATTACK, str(conv["category"]), last),
            )
    for row in _repo("harmful_prompts.jsonl"):
        yield _harm(str(row["text"]), "repo_harmful", str(row["category"]))
    for _ in range(2):  # the harmful half of the contrast pairs, as often as the benign half
        for row in _repo("contrast_harmful.jsonl"):
            yield _harm(str(row["text"]), "repo_contrast_harmful", str(row["category"]))


def _user_turns(path: Path, rng: random.Random, limit: int, joined: bool = False) -> list[str]:
    texts: list[str] = []
    for conv in _jsonl(path):
        users = [str(m["content"]) for m in conv["messages"] if m["role"] == "user"]  # type: ignore[attr-defined,index]
        if joined:
            texts.append("\n".join(users))
        else:
            texts.extend(users)
    rng.shuffle(texts)
    return texts[:limit]


def benign_prompts(train: Path, rng: random.Random) -> Iterator[Example]:
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for row in _jsonl(train / "self_instruct" / name):
            instance = (row.get("instances") or [{}])[0]  # type: ignore[index]
            extra = str(instance.get("input", "")) if isinstance(instance, dict) else ""
            yield _benign(f"{row['instruction']}\n{extra}".strip(), "self_instruct")
    for row in _jsonl(train / "vicuna_bench/vicuna_bench_question.jsonl"):
        yield _benign(str(row["turns"][0]), "vicuna_bench")  # type: ignore[index]
    for row in _jsonl(train / "oasst1_prompts/oasst1_prompter_messages.jsonl"):
        yield _benign(str(row["text"]), "oasst1")
    gsm = [str(row["question"]) for row in _jsonl(train / "gsm8k/train.jsonl")]
    rng.shuffle(gsm)
    for text in gsm[:GSM8K_PROMPTS]:
        yield _benign(text, "gsm8k")
    for row in _jsonl(train / "humaneval/HumanEval.jsonl"):
        yield _benign(str(row["prompt"]), "humaneval")
    for row in json.loads((train / "purplellama_frr/mitre_frr.json").read_text(encoding="utf-8")):
        yield _benign(str(row["mutated_prompt"]), "purplellama_frr")
    for text in _user_turns(train / "multiturn/mtbench101.norm.jsonl", rng, MTBENCH101_TURNS):
        yield _benign(text, "mtbench101")
    for name in ("tomgibbs-Completely-Benign.norm.jsonl", "tomgibbs-Semi-Benign.norm.jsonl"):
        for text in _user_turns(train / "multiturn" / name, rng, TOMGIBBS_JOINED, joined=True):
            yield _benign(text, "tomgibbs")
        # The guard scores every user turn, so single turns must read as benign too.
        for text in _user_turns(train / "multiturn" / name, rng, TOMGIBBS_TURNS):
            if len(text.strip()) >= 8:
                yield _benign(text, "tomgibbs")
    for conv in _jsonl(train / "multiturn/actorattack.norm.jsonl"):
        users = [str(m["content"]) for m in conv["messages"] if m["role"] == "user"]  # type: ignore[attr-defined,index]
        if len(users) >= 3:
            yield _benign(users[0], "actorattack_first")
    lookalikes = [str(row["text"]) for row in _repo("benign_lookalikes.jsonl")]
    for _ in range(3):  # small but important: the lookalikes are what keeps false positives down
        for text in lookalikes:
            yield _benign(text, "repo_benign")
    contrast = [str(row["text"]) for row in _repo("contrast_benign.jsonl")]
    for _ in range(2):
        for text in contrast:
            yield _benign(text, "repo_benign")


def replies(train: Path, rng: random.Random) -> Iterator[Example]:
    for name in ("replies.jsonl", "replies_varied.jsonl"):
        for row in _repo(name):
            prompt, reply = str(row["prompt"]), str(row["reply"])
            yield _reply(prompt, reply, "repo_replies", str(row["refusal"]))
    for path in sorted(glob.glob(str(train / "jbb_artifacts/attack-artifacts/*/*/*.json"))):
        for item in json.loads(Path(path).read_text(encoding="utf-8"))["jailbreaks"]:
            prompt, response = item.get("prompt"), item.get("response")
            if not prompt or not response:
                continue
            label = weak_refusal_label(str(response), bool(item.get("jailbroken")))
            if label is not None and rng.random() < 0.6:  # long replies: sample to save CPU
                yield _reply(str(prompt), str(response), "jbb_responses", label)
    hh = list(_jsonl(train / "hh_rlhf_harmless_base/hh_rlhf_harmless_base.norm.jsonl"))
    rng.shuffle(hh)
    for conv in hh[:600]:
        messages = conv["messages"]
        if len(messages) < 2 or messages[0]["role"] != "user" or messages[1]["role"] != "assistant":  # type: ignore[index]
            continue
        prompt, reply = str(messages[0]["content"]), str(messages[1]["content"])  # type: ignore[index]
        label = weak_refusal_label(reply)
        if label is not None:
            yield _reply(prompt, reply, "hh_rlhf", label)
    gsm = list(_jsonl(train / "gsm8k/train.jsonl"))
    rng.shuffle(gsm)
    for row in gsm[:150]:
        yield _reply(str(row["question"]), str(row["answer"]), "gsm8k", Refusal.NONE.value)
    for row in _jsonl(train / "humaneval/HumanEval.jsonl"):
        yield _reply(
            str(row["prompt"]),
            str(row["prompt"]) + str(row["canonical_solution"]),
            "humaneval",
            Refusal.NONE.value,
        )
    for row in _jsonl(train / "self_instruct/user_oriented_instructions.jsonl"):
        instance = row["instances"][0]  # type: ignore[index]
        prompt = f"{row['instruction']}\n{instance['input']}".strip()
        yield _reply(prompt, str(instance["output"]), "self_instruct", Refusal.NONE.value)
    convs = list(_jsonl(train / "multiturn/mtbench101.norm.jsonl"))
    rng.shuffle(convs)
    for conv in convs[:250]:
        messages = conv["messages"]
        if len(messages) >= 2 and messages[1]["role"] == "assistant":  # type: ignore[index]
            yield _reply(
                str(messages[0]["content"]),
                str(messages[1]["content"]),  # type: ignore[index]
                "mtbench101",
                Refusal.NONE.value,
            )


_REPEATED_SOURCES = frozenset({"repo_benign", "repo_contrast_harmful", "repo_persona"})


def _dedup(examples: Iterable[Example]) -> list[Example]:
    seen: set[tuple[str, str | None]] = set()
    kept: list[Example] = []
    for example in examples:
        key = (example.text, example.pair)
        repeated_on_purpose = example.source in _REPEATED_SOURCES
        if not example.text or (key in seen and not repeated_on_purpose):
            continue
        seen.add(key)
        kept.append(example)
    return kept


DEV_FRACTION = 0.1  # share of examples (by a hash of the text) held out for tuning


def is_dev(example: Example, dev_fraction: float = DEV_FRACTION) -> bool:
    """Stable dev-split membership by a hash of the text (same text -> same side)."""
    digest = hashlib.sha256(example.text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < dev_fraction


# The repo's written benign prompts, each row tagged with the kind of lookalike it is.
BENIGN_KIND_FILES = ("benign_lookalikes.jsonl", "contrast_benign.jsonl")


def benign_kinds() -> dict[str, list[str]]:
    """The repo's written benign prompts by ``kind`` (homonyms, history, role-play, ...)."""
    kinds: dict[str, list[str]] = {}
    for name in BENIGN_KIND_FILES:
        for row in _repo(name):
            kinds.setdefault(str(row["kind"]), []).append(str(row["text"]))
    return kinds


def fold_kinds(fold: int, folds: int) -> frozenset[str]:
    """The kinds one cross-fitting fold holds out: sorted kind names, dealt round-robin."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is not one of 0..{folds - 1}")
    return frozenset(kind for i, kind in enumerate(sorted(benign_kinds())) if i % folds == fold)


def load(
    data_dir: Path,
    seed: int = 13,
    dev_fraction: float = DEV_FRACTION,
    holdout_kinds: frozenset[str] = frozenset(),
    drop_sources: frozenset[str] = frozenset(),
    template_pairs: Literal["", "replace", "add"] = "",
    personas: Literal["", "benign", "both"] = "",
) -> tuple[list[Example], list[Example]]:
    """(train, dev) examples from ``data_dir/train`` and guard/training/data/.

    ``holdout_kinds`` leaves the written benign prompts of those kinds out of both splits,
    so a model trained without them can score them as unseen (:mod:`guard.training.crossfit`).
    ``drop_sources`` leaves every example of those sources out of both splits (and out of
    the buried-request augmentation, which is drawn from what is left).  With
    ``template_pairs`` the jailbreak templates are replaced by (``"replace"``) or kept beside
    (``"add"``) :func:`paired_templates`.  ``personas`` adds :func:`persona_prompts`
    (``"benign"``: the benign half only).
    """
    train_dir = data_dir / "train"
    if not train_dir.is_dir():
        raise FileNotFoundError(
            f"{train_dir} not found (pass --data pointing at the datasets folder)"
        )
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    examples = _dedup(
        [
            *harmful_prompts(train_dir, rng),
            *benign_prompts(train_dir, rng),
            *replies(train_dir, rng),
            *(persona_prompts(harmful=personas == "both") if personas else ()),
        ]
    )
    if template_pairs:
        examples = paired_templates(
            examples,
            random.Random(seed + 1),  # noqa: S311 - reproducible sampling, not security
            keep=template_pairs == "add",
        )
    if drop_sources:
        examples = [e for e in examples if e.source not in drop_sources]
    if holdout_kinds:
        kinds = benign_kinds()
        held = {text for kind in holdout_kinds for text in kinds.get(kind, [])}
        examples = [e for e in examples if e.is_reply or e.text not in held]
    train = [e for e in examples if not is_dev(e, dev_fraction)]
    dev = [e for e in examples if is_dev(e, dev_fraction)]
    return train + buried(train, rng), dev


def persona_prompts(*, harmful: bool = True) -> Iterator[Example]:
    """The repo's role-play and instruction-heavy prompts (:mod:`guard.training.personas`):
    benign ones twice, as the other written benign prompts, harmful ones once (if asked)."""
    benign = [str(row["text"]) for row in _repo("personas_benign.jsonl")]
    for _ in range(2):
        for text in benign:
            yield _benign(text, "repo_persona")
    if harmful:
        for row in _repo("personas_harmful.jsonl"):
            yield _harm(str(row["text"]), "repo_persona_harmful", str(row["category"]))


TEMPLATE_OPENING_CHARS = 300  # with a short request after it, inside one 128-token window
_HARMFUL_REQUESTS = frozenset({"advbench_behaviors", "forbidden_questions"})
_BENIGN_REQUESTS = frozenset({"self_instruct", "vicuna_bench", "oasst1"})


def paired_templates(
    examples: list[Example], rng: random.Random, *, keep: bool = False
) -> list[Example]:
    """Each jailbreak template's opening twice: once before a harmful request (harmful, the
    request's category) and once before a benign one (benign).

    The in-the-wild templates are long role-play set-ups, mostly with no request of their
    own; labelled harmful as they stand, they taught the model that a role-play set-up is
    harm (MT-Bench's "Pretend yourself to be Elon Musk ..." turns were flagged; model card,
    "v6").  Paired, the framing says nothing and the request decides.  The training reads a
    text's first window, so only the opening is kept, cut at a word.  With ``keep`` the
    templates themselves stay too (harmful as labelled).
    """
    templates = [e for e in examples if e.source == "jailbreak_templates"]
    harmful = [e for e in examples if e.source in _HARMFUL_REQUESTS and len(e.text) <= 200]
    benign = [e for e in examples if e.source in _BENIGN_REQUESTS and len(e.text) <= 200]
    pairs: list[Example] = []
    for template in templates:
        opening = template.text[:TEMPLATE_OPENING_CHARS].rsplit(" ", 1)[0]
        request = rng.choice(harmful)
        pairs.append(_harm(f"{opening}\n\n{request.text}", "template_harmful", request.category))
        pairs.append(_benign(f"{opening}\n\n{rng.choice(benign).text}", "template_benign"))
    kept = examples if keep else [e for e in examples if e.source != "jailbreak_templates"]
    return kept + pairs


def buried(train: list[Example], rng: random.Random, n: int = 700) -> list[Example]:
    """Harmful requests placed after (or before) benign text, and benign+benign pairs.

    Public harmful prompts are short and long texts are mostly benign, so without these a
    model learns "long means benign" and a request buried in a long prompt slips through
    (the scorer's windows only help if a window with context still reads as harmful).
    Built from the train side only, so the dev split stays untouched.
    """
    benign = [e.text for e in train if e.harmful is False and 80 <= len(e.text) <= 600]
    harmful = [e for e in train if e.harmful and len(e.text) <= 300]
    extra: list[Example] = []
    for example in rng.sample(harmful, min(n, len(harmful))):
        context = rng.choice(benign)
        text = (
            f"{context}\n\n{example.text}"
            if rng.random() < 0.75
            else f"{example.text}\n\n{context}"
        )
        extra.append(_harm(text, "buried_harmful", example.category))
    for _ in range(n // 2):
        extra.append(_benign(f"{rng.choice(benign)}\n\n{rng.choice(benign)}", "benign_pair"))
    return extra


def describe(examples: list[Example]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for example in examples:
        if example.is_reply:
            key = f"reply:{example.refusal}"
        else:
            key = "prompt:harmful" if example.harmful else "prompt:benign"
        counts[key] = counts.get(key, 0) + 1
    return counts
