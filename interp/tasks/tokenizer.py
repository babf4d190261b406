"""The character-level tokenizer shared by the quadratic and arithmetic tasks.

Built with the `tokenizers` library and saved as `tokenizer.json` (plus the small HF config
files) inside every checkpoint, so that `transformers.AutoTokenizer.from_pretrained(dir)` and
`TransformerBridge.boot_transformers(dir)` find the real vocabulary instead of an empty one.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from interp.errors import TaskError

PAD, BOS, EOS, SEP, UNK = "<pad>", "<bos>", "<eos>", "<sep>", "<unk>"
SPECIALS = (PAD, BOS, EOS, SEP, UNK)
CHARS = "0123456789+-*/=^()x;Dna"
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + tuple(CHARS))}


def build_tokenizer() -> Tokenizer:
    """A `tokenizers.Tokenizer`: one token per character, specials written as `<bos>` etc."""
    tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIALS))
    return tok


def hf_tokenizer():
    """The same tokenizer as a `transformers.PreTrainedTokenizerFast`."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(), bos_token=BOS,
                                   eos_token=EOS, pad_token=PAD, sep_token=SEP, unk_token=UNK,
                                   model_max_length=4096)


def save_tokenizer(directory: str | Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    hf_tokenizer().save_pretrained(str(directory))


class CharCodec:
    """Fast string <-> id conversion for training and decoding (no Python tokenizer calls)."""

    def __init__(self, vocab: dict[str, int] | None = None):
        self.vocab = dict(vocab or VOCAB)
        self.itos = {i: s for s, i in self.vocab.items()}
        self.pad, self.bos, self.eos, self.sep = (self.vocab[t] for t in (PAD, BOS, EOS, SEP))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.vocab[ch] for ch in text]
        except KeyError as e:
            chars = "".join(c for c in self.vocab if len(c) == 1)
            raise TaskError(f"character {e.args[0]!r} is not in the vocabulary; allowed "
                            f"characters are {chars!r}") from None

    def decode(self, ids) -> str:
        """Characters up to the first <eos>; other special tokens are dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            s = self.itos.get(i, "")
            if len(s) == 1:
                out.append(s)
        return "".join(out)

    def __len__(self) -> int:
        return len(self.vocab)
