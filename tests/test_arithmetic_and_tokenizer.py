"""The arithmetic task and the character tokenizer."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from interp.errors import TaskError
from interp.tasks import ArithmeticTask, CharCodec, get_task, save_tokenizer
from interp.tasks.tokenizer import VOCAB


def test_arithmetic_examples_are_exact_and_subtraction_never_negative():
    task = ArithmeticTask(1, 99)
    for ex in task.generate(2000, seed=0):
        left, right = ex.src[:-1].replace("-", "+").split("+")
        a, b = int(left), int(right)
        assert 1 <= a <= 99 and 1 <= b <= 99
        want = a + b if ex.cls == "add" else a - b
        assert int(ex.tgt) == want and want >= 0
        assert task.check(ex.src, ex.tgt).ok
        assert not task.check(ex.src, str(want + 1)).ok
        assert not task.check(ex.src, ex.tgt + "0").ok


def test_arithmetic_options_and_roles():
    task = ArithmeticTask(10, 20, ops=("sub",))
    exs = task.generate(50, seed=1)
    assert all(e.cls == "sub" and "-" in e.src for e in exs)
    assert task.roles("23+45=") == (["a_digit", "a_digit", "op", "b_digit", "b_digit", "="],
                                    ["result_digit", "result_digit"])
    assert task.parse(" 23 + 45 ") == "23+45="
    with pytest.raises(TaskError, match="23\\+45"):
        task.parse("23*45")
    with pytest.raises(TaskError, match="add, sub"):
        ArithmeticTask(ops=("mul",))
    v = task.check("23+45=", "6x")
    assert v.steps["format"] is False and not v.ok


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["small", "seed"]))
def test_codec_and_hf_tokenizer_round_trip(tmp_path_factory, seed, preset):
    from transformers import AutoTokenizer

    path = tmp_path_factory.getbasetemp() / "tok"
    if not (path / "tokenizer.json").exists():
        path.mkdir(exist_ok=True)
        save_tokenizer(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    codec = CharCodec()
    ex = get_task("quadratic", preset).sample(random.Random(seed))
    text = ex.src + ex.tgt
    ids = codec.encode(text)
    assert len(ids) == len(text)  # one token per character
    assert tok(text, add_special_tokens=False).input_ids == ids
    assert tok.decode(ids) == text == codec.decode(ids)
    assert tok.convert_tokens_to_ids(["<bos>", "<sep>", "<eos>", "<pad>"]) == \
        [VOCAB["<bos>"], VOCAB["<sep>"], VOCAB["<eos>"], VOCAB["<pad>"]]


def test_codec_rejects_unknown_characters_listing_the_vocabulary():
    with pytest.raises(TaskError, match="allowed characters are '0123456789"):
        CharCodec().encode("7y^2")


def test_codec_decode_stops_at_eos_and_drops_specials():
    c = CharCodec()
    assert c.decode([c.bos] + c.encode("12") + [c.sep] + c.encode("3") + [c.eos] + c.encode("9")) \
        == "123"
