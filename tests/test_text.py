"""The standard-library text corpus and its BPE (#5's training data)."""

import pytest
import torch

from interp.tasks import text as T


@pytest.fixture(scope="module")
def small_corpus():
    files = T.stdlib_files()
    pick = [f for f in files if f.name in ("bisect.py", "colorsys.py", "keyword.py",
                                           "this.py", "stat.py", "fnmatch.py")]
    assert len(pick) == 6
    return pick


def test_stdlib_files_are_sorted_sources_without_tests():
    files = T.stdlib_files()
    root = T.stdlib_root()
    rel = [f.relative_to(root).as_posix() for f in files]
    assert rel == sorted(rel) and len(files) > 100
    assert not any(p in ("test", "tests", "site-packages", "idlelib")
                   for f in files for p in f.relative_to(root).parts)
    assert all(r.endswith(".py") for r in rel)


def test_split_is_disjoint_stable_and_independent_of_other_files():
    files = T.stdlib_files()
    train, val = T.split_files(files, 0.05)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(files)
    assert 0 < len(val) < 0.15 * len(files)
    train2, val2 = T.split_files(files[::2], 0.05)
    assert set(val2) == set(val) & set(files[::2])


def test_bpe_round_trips_text_and_is_deterministic(small_corpus, tmp_path):
    tok = T.train_bpe(small_corpus, vocab_size=400)
    again = T.train_bpe(small_corpus, vocab_size=400)
    assert tok.to_str() == again.to_str()
    assert [tok.token_to_id(s) for s in T.SPECIALS] == [0, 1, 2]
    for f in small_corpus:
        src = T.read_text(f)
        assert tok.decode(tok.encode(src).ids) == src
    hf = T.hf_text_tokenizer(tok)
    hf.save_pretrained(str(tmp_path))
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded.bos_token_id == 1 and loaded("def f(x):").input_ids == \
        tok.encode("def f(x):").ids


def test_encoded_corpus_and_windows(small_corpus):
    tok = T.train_bpe(small_corpus, vocab_size=400)
    ids = T.encode_files(tok, small_corpus)
    assert int((ids == 2).sum()) == len(small_corpus)           # one <eos> per file
    g = torch.Generator().manual_seed(0)
    w = T.sample_windows(ids, 8, 32, g, bos=1)
    assert w.shape == (8, 33) and (w[:, 0] == 1).all()
    text = ids.tolist()
    for row in w[:, 1:].tolist():                               # a real stretch of the corpus
        assert any(text[i:i + 32] == row for i in range(len(text) - 31))
    assert torch.equal(w, T.sample_windows(ids, 8, 32, torch.Generator().manual_seed(0), 1))


def test_fingerprint_names_the_corpus(small_corpus):
    fp = T.corpus_fingerprint(small_corpus)
    assert fp["files"] == 6 and fp["bytes"] == sum(f.stat().st_size for f in small_corpus)
    assert fp == T.corpus_fingerprint(small_corpus) and len(fp["sha256"]) == 64
    assert T.corpus_fingerprint(small_corpus[:5])["sha256"] != fp["sha256"]
