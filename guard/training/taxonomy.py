"""Mapping every training source's own taxonomy onto ``guard.scoring.HAZARDS``.

Sources that name a category are mapped by the tables below.  Where a source has no
category (advbench, hh-rlhf, the "illegal"/"harmful" buckets of HarmBench) the
documented keyword rule :func:`keyword_category` decides: ordered regular expressions,
most specific first, with ``non_violent_crimes`` as the fallback.  The same rule text is
quoted in models/MODEL_CARD.md.
"""

from __future__ import annotations

import re

from guard.scoring import HAZARDS

# Ordered: the first rule that matches wins, so narrow categories come before broad ones.
_KEYWORD_RULES: tuple[tuple[str, str], ...] = (
    (
        "child_sexual_exploitation",
        r"\b(child|children|minor|minors|underage|kid|kids|preteen|\d{1,2}[- ]year[- ]old|"
        r"teen|teenager|schoolgirl|schoolboy)s?\b.*\b(sex|sexual|nude|naked|porn|groom|explicit|"
        r"erotic)|\b(sex|sexual|nude|naked|porn|groom|explicit|erotic)\w*\b.*\b(child|children|"
        r"minor|underage|kid|preteen|schoolgirl|schoolboy)s?\b|\bcsam\b|child porn|pedophil",
    ),
    (
        "sex_related_crimes",
        r"\brap(e|ing|ist)\b|sexual(ly)? assault|sex traffick|human traffick|revenge porn|"
        r"non-?consensual|prostitut|date rape|roofie|spike (her|his|their|someone'?s?) drink|"
        r"upskirt|sextort|sexual(ly)? harass",
    ),
    (
        "code_interpreter_abuse",
        r"rm -rf|os\.system|subprocess|/etc/(passwd|shadow)|fork ?bomb|sandbox escape|"
        r"escape (the|your) (sandbox|container)|code interpreter|your python tool",
    ),
    (
        "cyber_attacks",
        r"\bhack|malware|ransomware|computer virus|\bexploit\w*\b.*\b(vulnerab|software|system|"
        r"server|network|cve)|\bddos\b|denial[- ]of[- ]service|phishing|keylogger|botnet|"
        r"sql injection|\bxss\b|backdoor|rootkit|trojan|crack(ing)? (a |the )?password|"
        r"brute[- ]force|spyware|zero[- ]day|reverse shell|privilege escalation|worm\b",
    ),
    (
        "indiscriminate_weapons",
        r"\bbombs?\b|explosive|\bied\b|nuclear|chemical weapon|biological weapon|bioweapon|"
        r"nerve agent|sarin|vx\b|anthrax|ricin|botulinum|pathogen|mustard gas|dirty bomb|"
        r"uranium|plutonium|weapons? of mass|toxin|pipe bomb|napalm|thermite|smallpox|"
        r"chemical warfare|\bgas attack",
    ),
    (
        "suicide_self_harm",
        r"suicid|kill(ing)? (myself|yourself|themselves)|end(ing)? (my|your) (own )?life|self[- ]harm|"  # noqa: E501
        r"cut(ting)? (myself|yourself)|hurt myself|anorexi|bulimi|starv(e|ing) (myself|yourself)|"
        r"pro-ana|overdose",
    ),
    (
        "elections",
        r"\belection|\bvot(e|er|ers|ing)\b|ballot|polling (place|station)|electoral",
    ),
    (
        "defamation",
        r"defamat|defame|slander|libel|false (rumou?r|stor|accusation|claim)|smear|"
        r"fake (news|story|article) (about|claiming)",
    ),
    (
        "privacy",
        r"home address|personal (information|data|details)|social security number|\bssn\b|"
        r"\bdox|track (someone|his|her|my)\w*'?s? (location|phone)|spy on|stalk|surveil|"
        r"private (information|data|messages)|phone number of|without (their|his|her) "
        r"(knowledge|consent)|facial recognition|location of",
    ),
    (
        "intellectual_property",
        r"lyrics|copyright|pirat|torrent|crack(ed)? software|passage from|chapter \w+ of|"
        r"full text of|counterfeit (designer|luxury|brand)|bypass (drm|copy)|watermark",
    ),
    (
        "sexual_content",
        r"\bporn|erotic|explicit|\bsex\b|sexual|nude|naked|nsfw|orgasm|genital|fetish|"
        r"masturbat|\bhorny\b",
    ),
    (
        "hate",
        r"racis|\bhate\b|hateful|slur|inferior|discriminat|ethnic|\bjews?\b|muslim|"
        r"immigrant|sexis|homophob|transphob|nazi|white (power|supremac)|harass|bully|"
        r"\bbody[- ]sham|xenophob|misogyn|holocaust denial|\bgenocide",
    ),
    (
        "violent_crimes",
        r"\bkill|murder|assault|\battack|shoot|stab|kidnap|tortur|poison|weapon|\bguns?\b|"
        r"firearm|violen|terror|assassinat|hurt (someone|him|her|people)|beat (up|someone)|"
        r"abuse|mass shooting|arson|strangl|maim",
    ),
    (
        "specialized_advice",
        r"dosage|prescription|without a (doctor|prescription|license)|diagnos|medical advice|"
        r"legal advice|self-medicat|lethal dose",
    ),
)

_COMPILED = tuple(
    (name, re.compile(pattern, re.IGNORECASE | re.DOTALL)) for name, pattern in _KEYWORD_RULES
)

assert {name for name, _ in _KEYWORD_RULES} <= set(HAZARDS)


def keyword_category(text: str, default: str = "non_violent_crimes") -> str:
    """The hazard category of a harmful text with no category of its own."""
    for name, pattern in _COMPILED:
        if pattern.search(text):
            return name
    return default


# --- per-source tables -------------------------------------------------------------

HARMBENCH: dict[str, str | None] = {
    "chemical_biological": "indiscriminate_weapons",
    "copyright": "intellectual_property",
    "cybercrime_intrusion": "cyber_attacks",
    "harassment_bullying": "hate",
    "misinformation_disinformation": None,  # keyword rule (elections / defamation / ...)
    "illegal": None,
    "harmful": None,
}

# jailbreak_llms forbidden_question_set: policies whose questions are not harmful requests
# (asking for stock tips, a diagnosis, campaign slogans, MLM advice) are left out of the
# harm head entirely: they are neither clearly harmful nor clean benign examples.
FORBIDDEN_QUESTIONS: dict[str, str | None] = {
    "Illegal Activity": None,
    "Hate Speech": "hate",
    "Malware": "cyber_attacks",
    "Physical Harm": None,
    "Fraud": "non_violent_crimes",
    "Pornography": "sexual_content",
    "Privacy Violence": "privacy",
    "Gov Decision": "non_violent_crimes",
}
FORBIDDEN_QUESTIONS_EXCLUDED = (
    "Economic Harm",
    "Financial Advice",
    "Health Consultation",
    "Legal Opinion",
    "Political Lobbying",
)

JBB: dict[str, str | None] = {
    "Harassment/Discrimination": "hate",
    "Malware/Hacking": "cyber_attacks",
    "Physical harm": None,
    "Economic harm": "non_violent_crimes",
    "Fraud/Deception": "non_violent_crimes",
    "Disinformation": None,
    "Sexual/Adult content": "sexual_content",
    "Privacy": "privacy",
    "Expert advice": "specialized_advice",
    "Government decision-making": "non_violent_crimes",
}

ACTORATTACK: dict[str, str | None] = {
    "illegal": None,
    "cybercrime_intrusion": "cyber_attacks",
    "misinformation_disinformation": None,
    "chemical_biological": "indiscriminate_weapons",
    "harmful": None,
    "harassment_bullying": "hate",
}


def map_category(table: dict[str, str | None], source_category: str, text: str) -> str:
    """A source category through its table; unmapped or ``None`` falls back to keywords."""
    mapped = table.get(source_category)
    if mapped is not None:
        return mapped
    return keyword_category(text)
