"""The windowed streaming detokenizer (for tokenizers mlx-lm streams by decoding the whole line):
its pieces add up to what decoding the whole answer gives, for the decoders that make streaming
hard (a character split over tokens, spaces a decoder adds or removes), and each token decodes a
window of a few tokens however long the line is."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from mlxk.generation.detokenize import MAX_HELD, WindowedDetokenizer
from tests.modelfix import build_tiny_chat_model, char_tokenizer, install


def streamed(detokenizer: WindowedDetokenizer, tokens: list[int]) -> list[str]:
    """The pieces ``last_segment`` gives while the tokens go in, and the last one after
    ``finalize``."""
    detokenizer.reset()
    pieces = []
    for token in tokens:
        detokenizer.add_token(token)
        pieces.append(detokenizer.last_segment)
    detokenizer.finalize()
    pieces.append(detokenizer.last_segment)
    return pieces


def fast(tokenizer: Any, clean_spaces: bool = False) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=clean_spaces)  # type: ignore[no-untyped-call]


def words_tokenizer() -> Any:
    """Whole words and punctuation, joined again with spaces by the WordPiece decoder (which
    also glues ``##`` pieces to the word before)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = ["[UNK]", "hello", "world", ",", ".", "!", "it", "'s", "don", "'t", "un", "##able", "##s"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return tokenizer


def byte_fallback_tokenizer() -> Any:
    """Characters and ``<0xNN>`` byte tokens (a character outside the vocabulary comes as its
    UTF-8 bytes, one token each), decoded by ByteFallback then Fuse: not a decoder mlx-lm
    streams token by token."""
    from tokenizers import Tokenizer, decoders, models

    vocab = ["<unk>", "a", "b", " ", "{", "}", '"', ":"] + [f"<0x{b:02X}>" for b in range(256)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


def test_the_tiny_models_tokenizer_streams_what_a_whole_decode_gives(tmp_path: Path) -> None:
    from mlxk.generation.engine import load_engine

    engine = load_engine(str(install(tmp_path, "t/Char", build_tiny_chat_model()).snapshot))
    detokenizer = engine.detokenizer()
    assert isinstance(detokenizer, WindowedDetokenizer)  # mlx-lm would decode whole lines
    rnd = random.Random(7)
    size = len(engine.tokenizer)
    for _ in range(100):  # every token, special ones included, anywhere in the answer
        tokens = [rnd.randrange(size) for _ in range(rnd.randrange(1, 60))]
        assert "".join(streamed(detokenizer, tokens)) == engine.tokenizer.decode(tokens)


def test_a_byte_level_bpe_model_keeps_mlx_lms_own_detokenizer(tmp_path: Path) -> None:
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer

    from mlxk.generation.engine import load_engine

    engine = load_engine(str(install(tmp_path, "t/Bpe", build_tiny_chat_model(bpe=True)).snapshot))
    first, second = engine.detokenizer(), engine.detokenizer()
    assert isinstance(first, BPEStreamingDetokenizer)
    first.add_token(10)  # type: ignore[no-untyped-call]
    assert second.tokens == []  # each sequence has its own state


@pytest.mark.parametrize("clean_spaces", [False, True])
def test_spaces_a_decoder_adds_between_words_and_removes_before_punctuation(clean_spaces: bool) -> None:
    tokenizer = fast(words_tokenizer(), clean_spaces)
    ids = {
        w: tokenizer.convert_tokens_to_ids(w)
        for w in ["hello", ",", "world", "!", "it", "'s", "un", "##able"]
    }
    tokens = [ids[w] for w in ["hello", ",", "world", "!", "it", "'s", "un", "##able", "hello"]]
    whole = tokenizer.decode(tokens)
    assert ("hello, world!" in whole) is clean_spaces  # the decoders really differ
    pieces = streamed(WindowedDetokenizer(tokenizer), tokens)
    assert "".join(pieces) == whole
    assert "unable" in whole and pieces[0] == "hello"  # no space before the first word
    rnd = random.Random(3)
    for _ in range(200):
        tokens = [rnd.randrange(len(tokenizer)) for _ in range(rnd.randrange(1, 30))]
        assert "".join(streamed(WindowedDetokenizer(tokenizer), tokens)) == tokenizer.decode(tokens)


def test_a_character_split_over_byte_tokens_comes_out_whole() -> None:
    tokenizer = fast(byte_fallback_tokenizer())
    byte = [tokenizer.convert_tokens_to_ids(f"<0x{b:02X}>") for b in "€".encode()]
    letter_a = tokenizer.convert_tokens_to_ids("a")
    tokens = [letter_a, *byte, letter_a, *byte]
    pieces = streamed(WindowedDetokenizer(tokenizer), tokens)
    assert pieces == ["a", "", "", "€", "a", "", "", "€", ""]
    assert "".join(pieces) == tokenizer.decode(tokens) == "a€a€"


def test_an_incomplete_character_at_the_end_comes_out_on_finalize() -> None:
    tokenizer = fast(byte_fallback_tokenizer())
    half_euro = [tokenizer.convert_tokens_to_ids(f"<0x{b:02X}>") for b in "€".encode()[:2]]
    pieces = streamed(WindowedDetokenizer(tokenizer), [tokenizer.convert_tokens_to_ids("b"), *half_euro])
    assert pieces[:-1] == ["b", "", ""]  # held back while the character may still complete
    assert pieces[-1] == tokenizer.decode(half_euro) and pieces[-1].startswith("\ufffd")


def counted(tokenizer: Any) -> tuple[WindowedDetokenizer, list[int]]:
    """A detokenizer over ``tokenizer``, and the list where each of its decodes records how many
    tokens it decoded (from after its construction)."""
    windows: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self.encode = tokenizer.encode

        def decode(self, ids: list[int]) -> str:
            windows.append(len(ids))
            return str(tokenizer.decode(ids))

    detokenizer = WindowedDetokenizer(Counting())
    windows.clear()  # the probe for space clean-up at construction
    return detokenizer, windows


def test_each_token_decodes_a_few_tokens_however_long_the_line() -> None:
    """The work per token stays flat: a 3,000-token line without a line break (compact JSON)
    never decodes more than a few tokens at a time (mlx-lm's fallback decodes the whole line)."""
    tokenizer = fast(char_tokenizer())
    line = '{"a":[' + ",".join(f'"{i}"' for i in range(600)) + "]}"
    tokens = tokenizer.encode(line, add_special_tokens=False)
    assert len(tokens) > 3000
    detokenizer, windows = counted(tokenizer)
    pieces = streamed(detokenizer, tokens)
    assert "".join(pieces) == line
    assert max(windows) <= 2 and len(windows) <= 2 * len(tokens) + 2


def test_a_space_waits_for_the_token_after_it_when_the_tokenizer_removes_spaces_before_commas() -> None:
    tokenizer = fast(char_tokenizer(), clean_spaces=True)
    tokens = tokenizer.encode("a ,b c", add_special_tokens=False)
    assert tokenizer.decode(tokens) == "a,b c"
    pieces = streamed(WindowedDetokenizer(tokenizer), tokens)
    assert pieces == ["a", "", ",", "b", "", " c", ""]


@pytest.mark.parametrize("held", ["<0xFF>", " "])  # 0xFF is never valid UTF-8: U+FFFD each
def test_a_long_run_of_held_tokens_keeps_the_window_short(held: str) -> None:
    """Invalid bytes (each decodes to U+FFFD) and spaces (held while a comma may follow) are held
    back only up to ``MAX_HELD`` tokens: a run of them does not make the window grow."""
    tokenizer = fast(byte_fallback_tokenizer(), clean_spaces=True)
    tokens = [tokenizer.convert_tokens_to_ids(held)] * 300
    detokenizer, windows = counted(tokenizer)
    pieces = streamed(detokenizer, tokens)
    assert "".join(pieces) == tokenizer.decode(tokens)
    assert max(windows) <= 2 * MAX_HELD < len(tokens) // 10  # far shorter than the run
    assert sum(1 for piece in pieces if piece) >= len(tokens) // 10  # it streams as it goes
