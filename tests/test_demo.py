from __future__ import annotations

import io
import re

import pytest

from guard.demo import LABEL, SCENES, ScriptedModel

pytest.importorskip("guard.proxy", reason="the demo drives the HTTP sidecar")


def _scene(output: str, number: int) -> str:
    start = output.index(f"\n{number}. ")
    end = output.find(f"\n{number + 1}. ", start)
    return output[start : end if end != -1 else len(output)]


def _received(section: str) -> str:
    match = re.search(r"client received:\s+(.*?)\n   \S", section, re.S)
    assert match is not None
    return " ".join(match.group(1).split())


async def test_demo_shows_every_path_through_a_live_guard() -> None:
    from guard.demo import run_demo

    out = io.StringIO()
    metrics = await run_demo(out)
    output = out.getvalue()
    assert "SCRIPTED model" in output.splitlines()[0]
    assert "KeywordScorer" in output
    benign, bare, leak, blocked, over = (_scene(output, n) for n in range(1, 6))
    assert _received(benign) == " ".join(SCENES[0].scripted.split())
    assert "guard decision:" in benign and "allow" in benign
    assert LABEL in bare and "rewrite" in bare
    assert "I'm sorry" not in _received(bare) and "charges" in _received(bare)
    assert _received(leak).startswith("I can't help with that because it is dangerous.")
    assert "step 1" not in _received(leak) and "I'll stop there" in _received(leak)
    assert "never called" in blocked and "block" in blocked
    assert _received(over) == SCENES[4].scripted and "flag" in over
    assert metrics.registry.get_sample_value("guard_leaks_stopped_total") == 1
    assert "Scripted model calls: 4 of 5 scenes" in output
    assert "decided differently" not in output


def test_scripted_model_answers_only_its_script() -> None:
    model = ScriptedModel()
    scene = SCENES[1]
    assert model.reply_for({"messages": [{"role": "user", "content": scene.prompt}]}) == (
        scene.scripted
    )
    assert "scripted demo model" in model.reply_for({"messages": []})
