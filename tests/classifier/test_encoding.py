from __future__ import annotations

import itertools

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from guard.classifier.encoding import Encoder, Windowing


def _encoder(windowing: Windowing) -> Encoder:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    vocab.update({f"w{i}": 10 + i for i in range(100)})
    vocab.update({"can": 200, "'": 201, "t": 202, '"': 203})
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    return Encoder(tokenizer, windowing)


def test_short_text_is_one_window_with_special_tokens() -> None:
    (windows,) = _encoder(Windowing(max_length=8, stride=3, reply_prompt_tokens=2)).text_windows(
        ["w1 w2"]
    )
    assert [w.ids for w in windows] == [(2, 11, 12, 3)]


def test_long_text_windows_overlap_and_cover_the_end() -> None:
    words = " ".join(f"w{i}" for i in range(20))
    (windows,) = _encoder(Windowing(max_length=8, stride=4, reply_prompt_tokens=2)).text_windows(
        [words]
    )
    bodies = [w.ids[1:-1] for w in windows]
    assert all(len(body) == 6 for body in bodies)
    assert bodies[0][0] == 10 and bodies[-1][-1] == 29  # first and last token both covered
    covered = {token for body in bodies for token in body}
    assert covered == set(range(10, 30))
    assert all(set(a) & set(b) for a, b in itertools.pairwise(bodies))  # overlap


def test_first_only_keeps_the_head_window() -> None:
    words = " ".join(f"w{i}" for i in range(20))
    (windows,) = _encoder(Windowing(max_length=8, stride=4, reply_prompt_tokens=2)).text_windows(
        [words], first_only=True
    )
    assert len(windows) == 1


def test_reply_pair_keeps_prompt_head_and_marks_segments() -> None:
    encoder = _encoder(Windowing(max_length=12, stride=4, reply_prompt_tokens=2))
    (window,) = encoder.reply_windows(["w1 w2 w3 w4"], [" ".join(f"w{i}" for i in range(50))])
    assert len(window.ids) == 12
    assert window.ids[:4] == (2, 11, 12, 3)
    assert window.type_ids == (0,) * 4 + (1,) * 8
    assert window.ids[-1] == 3


def test_batch_pads_and_masks() -> None:
    encoder = _encoder(Windowing(max_length=8, stride=3, reply_prompt_tokens=2))
    windows = [w for ws in encoder.text_windows(["w1", "w1 w2 w3"]) for w in ws]
    batch = encoder.batch(windows)
    assert batch.input_ids.shape == (2, 5)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch.input_ids[0, 3:].tolist() == [0, 0]


@pytest.mark.parametrize(
    ("max_length", "stride", "reply_prompt_tokens"), [(4, 1, 0), (16, 15, 0), (16, 4, 9)]
)
def test_bad_window_geometry_is_refused(
    max_length: int, stride: int, reply_prompt_tokens: int
) -> None:
    with pytest.raises(ValueError, match="must"):
        Windowing(max_length, stride, reply_prompt_tokens)


def test_typographic_quotes_encode_as_ascii_ones() -> None:
    encoder = _encoder(Windowing(max_length=16, stride=4, reply_prompt_tokens=2))
    assert encoder.token_ids(["can\u2019t \u201cw1\u201d \u2018w2\u2019"]) == encoder.token_ids(
        ["can't \"w1\" 'w2'"]
    )
    assert encoder.token_ids(["can\u2019t"]) == [[200, 201, 202]]
