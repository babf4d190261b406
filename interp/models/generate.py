"""The greedy decoder: batched greedy decoding with the plain HF model (same weights as the
bridge), on the model's device and dtype. Evaluation, `solve` and training all decode here."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from interp.tasks.tokenizer import CharCodec
from interp.tokens import check_length, decoder_prompt, encoder_input, pad_rows


def wrapped_by_bridge(model: torch.nn.Module) -> bool:
    """True once a TransformerBridge has been booted on `model`: TransformerLens replaces the
    HF submodules in place with its own components (`interp.load_model` and `Checkpoint.bridge` do
    this to the checkpoint's model)."""
    return any(type(m).__module__.startswith("transformer_lens.") for m in model.modules())


@torch.no_grad()
def greedy_decode(model, arch: str, srcs: Sequence[str], n_ctx: int,
                  codec: CharCodec | None = None, batch_size: int = 256,
                  max_new_tokens: int | None = None, progress: bool = False) -> list[str]:
    """The model's greedy output for each input string, up to <eos> (specials dropped).

    Decoder prompts are grouped by length so no padding enters the attention; T5 inputs are
    right-padded with an attention mask. progress: a tqdm bar over examples (on a terminal).
    The token ids go to the model's device; its dtype (float32, bfloat16 ...) is kept. The
    model runs in eval mode and gets its training flag back.

    HF's key/value cache is used only on a plain HF model. Inside a model that a
    TransformerBridge has wrapped, the cache passes through TransformerLens's attention
    components, which read it under the keyword HF used to pass (`past_key_values`); since
    transformers 5.24 GPT-2 passes it as `cache`, so each cached step would attend to itself
    alone. There every step runs the whole sequence again (same outputs, slower).
    """
    import sys

    from tqdm.auto import tqdm

    from interp.hooks import device_of, eval_mode

    codec = codec or CharCodec()
    bar = tqdm(total=len(srcs), desc="decode", disable=not progress or not sys.stderr.isatty(),
               leave=False)
    use_cache = not wrapped_by_bridge(model)
    device = device_of(model)
    out: list[str | None] = [None] * len(srcs)
    with eval_mode(model), bar:
        if arch == "decoder":
            groups: dict[int, list[int]] = defaultdict(list)
            prompts = [decoder_prompt(codec, s) for s in srcs]
            for i, (s, p) in enumerate(zip(srcs, prompts)):
                check_length(len(p) + 1, n_ctx, f"the prompt for {s!r}")
                groups[len(p)].append(i)
            for length, idx in groups.items():
                budget = n_ctx - length if max_new_tokens is None else \
                    min(max_new_tokens, n_ctx - length)
                for k in range(0, len(idx), batch_size):
                    chunk = idx[k:k + batch_size]
                    ids = torch.tensor([prompts[i] for i in chunk], device=device)
                    gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                         max_new_tokens=budget, do_sample=False,
                                         eos_token_id=codec.eos, pad_token_id=codec.pad,
                                         use_cache=use_cache)
                    for i, row in zip(chunk, gen[:, length:]):
                        out[i] = codec.decode(row.tolist())
                    bar.update(len(chunk))
        else:
            enc = [encoder_input(codec, s) for s in srcs]
            for s, e in zip(srcs, enc):
                check_length(len(e), n_ctx, f"the input {s!r}")
            order = sorted(range(len(srcs)), key=lambda i: len(enc[i]))
            budget = n_ctx if max_new_tokens is None else min(max_new_tokens, n_ctx)
            for k in range(0, len(order), batch_size):
                chunk = order[k:k + batch_size]
                ids = pad_rows([enc[i] for i in chunk], codec.pad).to(device)
                gen = model.generate(input_ids=ids, attention_mask=(ids != codec.pad).long(),
                                     max_new_tokens=budget, do_sample=False,
                                     eos_token_id=codec.eos, pad_token_id=codec.pad,
                                     decoder_start_token_id=codec.pad, use_cache=use_cache)
                for i, row in zip(chunk, gen[:, 1:]):
                    out[i] = codec.decode(row.tolist())
                bar.update(len(chunk))
    return out  # type: ignore[return-value]
