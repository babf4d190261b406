"""Real text that is on every machine and that no one here wrote: the running interpreter's
standard-library source (`Lib/`), for training small language models (induction heads, #5).

    files = stdlib_files()                       # sorted, without tests, idlelib, site-packages
    train, val = split_files(files)              # a fixed function of each file's path
    tok = train_bpe(train, vocab_size=2048)      # byte-level BPE with <pad> <bos> <eos>
    ids = encode_files(tok, train)               # one long tensor, files separated by <eos>
    batch = sample_windows(ids, 64, 128, torch.Generator().manual_seed(0), bos=tok.bos)

The corpus depends on the Python version; `corpus_fingerprint` records which one was used.
Like every task module, this knows nothing of models.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from pathlib import Path
from typing import Sequence

import torch

from interp.errors import TaskError
from interp.tasks.base import stable_hash

SPECIALS = ("<pad>", "<bos>", "<eos>")
SKIP_PARTS = {"site-packages", "__pycache__", "test", "tests", "idlelib"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: str | Path | None = None, include_tests: bool = False) -> list[Path]:
    """Every .py file of the standard library, sorted by path relative to `root`; without the
    test suites and IDLE unless `include_tests`."""
    root = Path(root) if root else stdlib_root()
    skip = {"site-packages", "__pycache__"} if include_tests else SKIP_PARTS
    files = [f for f in root.rglob("*.py")
             if not skip.intersection(f.relative_to(root).parts) and f.is_file()]
    if not files:
        raise TaskError(f"no Python source files under {root}; give the standard library's "
                        "folder (sysconfig's 'stdlib' path)")
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def split_files(files: Sequence[Path], val_fraction: float = 0.05,
                root: str | Path | None = None) -> tuple[list[Path], list[Path]]:
    """(train, validation): a file is in validation when the stable hash of its relative
    path falls in the fraction, so the split never depends on which other files exist."""
    root = Path(root) if root else stdlib_root()
    cut = int(round(val_fraction * 10_000))
    val = [f for f in files if stable_hash(_rel(f, root)) % 10_000 < cut]
    keep = set(val)
    return [f for f in files if f not in keep], val


def _rel(f: Path, root: Path) -> str:
    try:
        return f.relative_to(root).as_posix()
    except ValueError:
        return f.name


def read_text(f: Path) -> str:
    return f.read_text(encoding="utf-8", errors="replace")


def corpus_fingerprint(files: Sequence[Path], root: str | Path | None = None) -> dict:
    """What the corpus was: Python version, number of files and bytes, and a hash of every
    file's relative path and content."""
    root = Path(root) if root else stdlib_root()
    h = hashlib.sha256()
    n_bytes = 0
    for f in files:
        data = f.read_bytes()
        n_bytes += len(data)
        h.update(_rel(f, root).encode() + b"\0" + hashlib.sha256(data).digest())
    return {"python": sys.version.split()[0], "files": len(files), "bytes": n_bytes,
            "sha256": h.hexdigest()}


def train_bpe(files: Sequence[Path], vocab_size: int = 2048, min_frequency: int = 2):
    """A byte-level BPE (`tokenizers`) trained on the files, with <pad> <bos> <eos> first.
    Deterministic: the same files and options give the same vocabulary and merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIALS):
        raise TaskError(f"vocab_size {vocab_size} is below the 256 bytes plus "
                        f"{len(SPECIALS)} special tokens; use at least {256 + len(SPECIALS)}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((read_text(f) for f in files), trainer=trainer)
    return tok


def hf_text_tokenizer(tok):
    """The BPE as a `transformers` fast tokenizer (what the bridge and AutoTokenizer load)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>")


def encode_files(tok, files: Sequence[Path]) -> torch.Tensor:
    """Every file's token ids, concatenated, each file followed by <eos>: [n_tokens]."""
    eos = tok.token_to_id("<eos>")
    out: list[int] = []
    for enc in tok.encode_batch([read_text(f) for f in files]):
        out.extend(enc.ids)
        out.append(eos)
    return torch.tensor(out, dtype=torch.long)


def sample_windows(ids: torch.Tensor, n: int, length: int, generator: torch.Generator,
                   bos: int) -> torch.Tensor:
    """[n, 1 + length]: <bos> then `length` consecutive corpus tokens from random offsets."""
    if len(ids) <= length:
        raise TaskError(f"the corpus has {len(ids)} tokens, fewer than a window of {length}")
    start = torch.randint(0, len(ids) - length, (n,), generator=generator)
    windows = ids[start[:, None] + torch.arange(length)[None, :]]
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), windows], 1)


def validation_ids(tokenizer) -> torch.Tensor:
    """[n_tokens]: this machine's validation files encoded with a model's `transformers`
    tokenizer (`encode_files` order, <eos> after each file)."""
    _, val = split_files(stdlib_files())
    return encode_files(tokenizer.backend_tokenizer, val)


def validation_snippets(tokenizer, n: int, length: int, seed: int = 0) -> list[str]:
    """`n` pieces of validation source text, each the decoded text of `length` consecutive
    tokens from a random offset (prompts for models trained on this corpus). `tokenizer` is
    the model's `transformers` tokenizer."""
    ids = validation_ids(tokenizer)
    g = torch.Generator().manual_seed(seed)
    windows = sample_windows(ids, n, length, g, bos=0)[:, 1:]
    return [tokenizer.decode(w.tolist(), skip_special_tokens=True) for w in windows]


__all__ = ["validation_ids", "validation_snippets", "stdlib_root", "stdlib_files", "split_files", "corpus_fingerprint", "train_bpe",
           "hf_text_tokenizer", "encode_files", "sample_windows", "read_text", "SPECIALS"]
