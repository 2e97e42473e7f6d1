import pytest
import torch

from engine.errors import UserInputError
from engine.models.token_conditioner import (
    BOS,
    EOS,
    LAYOUT,
    PAD,
    TokenConditioner,
    TokenConditionerConfig,
    Tokenizer,
)

WORDS = ("a", "red", "blue", "circle", "square", "at", "the", "top", "left")


def make(max_tokens=16):
    return TokenConditionerConfig(words=WORDS, coord_bins=8, max_tokens=max_tokens, width=32, layers=2, heads=4)


def test_text_tokens_are_words_between_bos_and_eos_then_padding():
    tok = Tokenizer(make())
    ids = tok.encode_text("A red  circle")
    base = 4
    assert ids[:5] == [BOS, base + 0, base + 1, base + 3, EOS]
    assert ids[5:] == [PAD] * 11


def test_layout_tokens_hold_label_words_and_quantised_corners():
    tok = Tokenizer(make())
    ids = tok.encode_layout([{"label": "blue square", "box": [0.0, 0.5, 0.99, 1.0]}])
    coord0 = 4 + len(WORDS)
    assert ids[:9] == [BOS, LAYOUT, 4 + 2, 4 + 4, coord0 + 0, coord0 + 4, coord0 + 7, coord0 + 7, EOS]


def test_unknown_words_are_named_in_the_error():
    tok = Tokenizer(make())
    with pytest.raises(UserInputError, match="purple.*triangle|triangle.*purple"):
        tok.encode_text("a purple triangle")


def test_too_long_input_is_refused_with_its_length():
    tok = Tokenizer(make(max_tokens=4))
    with pytest.raises(UserInputError, match="5 tokens"):
        tok.encode_text("a red circle")


def test_context_shape_and_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = TokenConditioner(make()).eval()
    ctx = model.encode_texts(["a red circle", "a blue square at the top left"])
    assert ctx.shape == (2, 16, 32)
    # the same prompt in a batch with another gives the same encoding
    alone = model.encode_texts(["a red circle"])
    assert torch.allclose(alone[0], ctx[0], atol=1e-5)
