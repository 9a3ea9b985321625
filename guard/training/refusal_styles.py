"""Varied refusal and compliance replies for the refusal head.

The first model typed many real refusals as compliance: long apologetic refusals, "As an
AI..." and "I'm just an AI" openings, refusals that lecture or redirect, and refusals that
never say "sorry" ("It is not appropriate to...").  It also needs the opposite contrast:
helpful answers that mention safety, danger or the law without refusing anything.  Each
reply here is assembled from an opening, a topic, an optional reason and an optional
redirect, so the classes differ in *what the reply does*, not in a fixed phrase.
Written for this repo; nothing copied or paraphrased from eval/ sets.
"""

from __future__ import annotations

import random

_TOPICS = [
    "instructions for making weapons",
    "ways to hurt another person",
    "details on how to break into someone's account",
    "content that targets people for their religion",
    "a plan to deceive voters",
    "personal information about a private individual",
    "step-by-step guidance for illegal drugs",
    "sexual content",
    "material that could be used to stalk someone",
    "advice on harming yourself",
    "false accusations about a real person",
    "a full copy of a copyrighted book",
    "code designed to damage computer systems",
    "help with this request",
    "that information",
    "assistance with this",
]

_APOLOGY = [
    "I'm sorry, but",
    "I apologize, but",
    "I'm really sorry, but",
    "Unfortunately,",
    "My apologies, but",
    "Sorry,",
    "I'm afraid",
    "",
]

_CANNOT = [
    "I can't provide {topic}.",
    "I cannot help with {topic}.",
    "I'm not able to give you {topic}.",
    "I won't be providing {topic}.",
    "I am unable to share {topic}.",
    "I can't assist with {topic}.",
    "I'm not going to write {topic}.",
    "I must decline to provide {topic}.",
    "I cannot fulfil your request for {topic}.",
]

_AI_OPENINGS = [
    "As an AI language model, I cannot provide {topic}.",
    "As an AI, I'm not able to help with {topic}.",
    "I'm just an AI, and I can't provide {topic}.",
    "As a responsible AI assistant, I must decline to give {topic}.",
    "Being an AI developed to be helpful and safe, I can't offer {topic}.",
]

_NO_SORRY_REFUSALS = [
    "It is not appropriate for me to provide {topic}.",
    "That's not something I'm willing to help with.",
    "This isn't a request I can fulfil.",
    "Providing {topic} is outside what I'm able to do.",
    "I'd rather not help with that.",
    "That request is one I have to turn down.",
    "Helping with that isn't something I'll do.",
]

_REASONS = [
    "It could lead to someone being seriously hurt.",
    "Doing so would be illegal and could put people in danger.",
    "This could violate someone's privacy and put their safety at risk.",
    "It goes against my guidelines because it could cause real harm.",
    "Content like this can fuel discrimination and hurt people.",
    "It would be unethical and could do lasting damage to others.",
    "Spreading that kind of misinformation undermines trust and can harm people.",
    "It could be used to exploit or abuse vulnerable people.",
    "It would infringe on the creator's copyright.",
    "Sharing it could enable fraud and financial harm.",
]

_LECTURES = [
    "It's important to treat everyone with respect and dignity, regardless of their background.",
    "I'd encourage you to think about how this could affect the people involved.",
    "Violence is never an acceptable way to resolve a conflict.",
    "Everyone has a right to privacy, and it's important to respect it.",
    "It's essential to act within the law and to consider the wellbeing of others.",
]

_REDIRECTS = [
    "If you're interested, I can explain the general topic in a safe way instead.",
    "Is there something else I can help you with?",
    "If you're going through a hard time, please consider reaching out to a crisis line or someone "
    "you trust.",
    "If you have a legitimate need, a licensed professional can help you safely.",
    "I'd be happy to help with a different question.",
    "Instead, I can suggest some resources on staying safe online.",
    "If you want, we could talk about why people are drawn to this topic.",
]

_PARTIAL_OPENERS = [
    "I can't give detailed instructions, but in general terms,",
    "While I don't condone this, here is some general information:",
    "I'd strongly advise against it. That said, the usual approach is as follows:",
    "I'm not comfortable giving a full guide. Broadly speaking, though,",
    "I won't help with the harmful part, but I can outline the basics:",
    "This is risky and possibly illegal, so please be careful. Here's an overview anyway:",
]

_PARTIAL_CONTENT = [
    "people usually start by getting the materials, then find a quiet time when nobody is around, "
    "and finally carry it out quickly.",
    "1. Look up the person's routine. 2. Pick a moment when they're alone. 3. Act before anyone "
    "notices.",
    "the first step is to gain access to the account, usually by guessing or resetting the "
    "password, and then to copy what you need.",
    "you would write the message so it looks official, send it to a large list, and collect the "
    "replies.",
    "the substances are mixed in a specific ratio and heated slowly in a ventilated space.",
]

_HELPFUL_WITH_SAFETY_WORDS = [
    "Sure. To stop a process that won't quit, find its ID with `ps aux | grep name` and run "
    "`kill -9 <pid>`. Be careful: killing the wrong process can crash your session, so check "
    "the ID first.",
    "Bleach and ammonia must never be mixed because they release toxic chloramine gas. Store them "
    "apart, ventilate the room while cleaning and rinse surfaces between products.",
    "The usual adult dose of ibuprofen is 200 to 400 mg every four to six hours, with no more than "
    "1,200 mg a day without a doctor's advice. Taking more can damage your stomach and kidneys, "
    "so talk to a pharmacist if you're unsure.",
    "Phishing emails often use urgent language, mismatched sender addresses and links to "
    "look-alike domains. Train staff to hover over links, report suspicious mail and never enter "
    "passwords from an email link.",
    "The bombing of the city killed tens of thousands of civilians and remains controversial. "
    "Historians debate whether it was militarily necessary; here is a summary of the main "
    "arguments on each side.",
    "Great question! In the game, the easiest way to take out the boss is to dodge its charge "
    "attack, then hit its weak spot on the back with fire arrows.",
    "To kill weeds safely around pets, pour boiling water on them or use a vinegar spray on a dry "
    "day. Avoid salt near plants you want to keep, as it harms the soil.",
    "Defamation is a false statement presented as fact that harms someone's reputation. To win a "
    "case, the claimant usually has to show the statement was false, published and damaging.",
    "It's illegal to drive over the limit, and the penalties are serious. The legal limit in "
    "England is 80 mg of alcohol per 100 ml of blood; the safest choice is not to drink at all "
    "before driving.",
    "Here's a short thriller opening: the detective knelt beside the body, noticing the faint "
    "smell of almonds - cyanide, she thought, and someone in this house had known exactly how "
    "much to use.",
    "Of course. Firewalls, regular patching, backups kept offline and multi-factor authentication "
    "are the strongest defences against ransomware. Test restoring from backup at least once a "
    "quarter.",
    "If you're feeling overwhelmed, you're not alone. Talking to someone you trust helps, and in "
    "the US you can call or text 988 any time. Would you like some grounding exercises too?",
    "Certainly. A sharp boning knife makes it easy: cut through the skin between leg and body, pop "
    "the joint, then slice along the backbone. Keep your fingers tucked and work on a stable "
    "board.",
    "Shooting at night works best with a tripod, a wide aperture like f/2.8 and ISO around 1600. "
    "Use a two-second timer so pressing the shutter doesn't shake the camera.",
]


def _capitalise(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:]


def _opening(rng: random.Random, topic: str) -> str:
    style = rng.random()
    if style < 0.45:
        apology = rng.choice(_APOLOGY)
        cannot = rng.choice(_CANNOT).format(topic=topic)
        return _capitalise(f"{apology} {cannot}")
    if style < 0.75:
        return rng.choice(_AI_OPENINGS).format(topic=topic)
    return rng.choice(_NO_SORRY_REFUSALS).format(topic=topic)


def rows(rng: random.Random, prompts: list[str], n_per_class: int = 180) -> list[dict[str, str]]:
    """``n_per_class`` replies each of bare, reasoned, partial and (safety-worded) none."""
    result: list[dict[str, str]] = []
    for _ in range(n_per_class):
        topic = rng.choice(_TOPICS)
        bare = _opening(rng, topic)
        if rng.random() < 0.3:
            bare += " " + rng.choice(_REDIRECTS[1:2] + _REDIRECTS[4:5])
        result.append({"prompt": rng.choice(prompts), "reply": bare, "refusal": "bare"})

        parts = [_opening(rng, rng.choice(_TOPICS)), rng.choice(_REASONS)]
        if rng.random() < 0.5:
            parts.append(rng.choice(_LECTURES))
        if rng.random() < 0.6:
            parts.append(rng.choice(_REDIRECTS))
        reasoned = " ".join(parts)
        result.append({"prompt": rng.choice(prompts), "reply": reasoned, "refusal": "reasoned"})

        partial = f"{rng.choice(_PARTIAL_OPENERS)} {rng.choice(_PARTIAL_CONTENT)}"
        if rng.random() < 0.4:
            partial = f"{_opening(rng, rng.choice(_TOPICS))} {partial}"
        result.append({"prompt": rng.choice(prompts), "reply": partial, "refusal": "partial"})

        helpful = rng.choice(_HELPFUL_WITH_SAFETY_WORDS)
        result.append({"prompt": rng.choice(prompts), "reply": helpful, "refusal": "none"})
    return result
