"""Native language models (attention-only, smeared keys, causal conv) through the bridge."""

import json

import pytest
import torch

from interp.errors import InterpError
from interp.models.native import (MIXINGS, NativeSpec, build_native, load_native,
                                  mixing_weights, save_native)


@pytest.fixture(scope="session")
def text_tokenizer():
    from interp.tasks import text as T

    files, _ = T.split_files(T.stdlib_files())
    return T.hf_text_tokenizer(T.train_bpe(files[:30], 300))


def tiny(mixing="none", layers=1, tok=None, seed=1):
    return build_native(NativeSpec(n_layers=layers, d_model=32, n_heads=4, n_ctx=32,
                                   d_vocab=300, mixing=mixing), seed=seed, tokenizer=tok)


def ids(n=2, width=20, seed=0):
    return torch.randint(3, 300, (n, width), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mixing", MIXINGS)
def test_save_then_load_gives_the_same_logits_and_mixing(tmp_path, text_tokenizer, mixing):
    b = tiny(mixing, layers=2, tok=text_tokenizer)
    with torch.no_grad():                       # make the mixing non-trivial
        for k, p in b.native_params.items():
            if k.endswith("alpha") or k.endswith("kernel"):
                p.add_(torch.randn_like(p))
    save_native(b, tmp_path / "m", {"task": {"task": "text"}})
    b2 = load_native(tmp_path / "m")
    x = ids()
    assert torch.equal(b(x), b2(x))
    for k, v in mixing_weights(b).items():
        assert torch.equal(v, mixing_weights(b2)[k])
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "interp-native" and cfg["mixing"] == mixing


def test_smeared_key_mixes_each_key_with_the_previous_one(text_tokenizer):
    b = tiny("smeared", tok=text_tokenizer)
    alpha = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    with torch.no_grad():
        b.native_params["layers.0.attn.k.alpha"].copy_(alpha)
    x = ids()
    _, cache = b.run_with_cache(x)
    ln = cache["blocks.0.ln1.hook_normalized"]
    p = b.native_params
    raw = (ln @ p["layers.0.attn.k.lin.weight"].T + p["layers.0.attn.k.lin.bias"])
    raw = raw.view(2, 20, 4, 8)
    s = torch.sigmoid(alpha)[None, None, :, None]
    want = torch.cat([raw[:, :1], s * raw[:, 1:] + (1 - s) * raw[:, :-1]], 1)
    got = cache["blocks.0.attn.hook_k"]
    assert torch.allclose(got.reshape(want.shape), want, atol=1e-5)


def test_a_smeared_model_with_alpha_at_plus_infinity_is_the_plain_model(text_tokenizer):
    smeared, plain = tiny("smeared", tok=text_tokenizer), tiny("none", tok=text_tokenizer)
    with torch.no_grad():
        for k, p in plain.native_params.items():
            p.copy_(smeared.native_params[k.replace("attn.k.", "attn.k.lin.")])
        smeared.native_params["layers.0.attn.k.alpha"].fill_(40.0)
    x = ids()
    assert torch.allclose(smeared(x), plain(x), atol=1e-5)
    with torch.no_grad():
        smeared.native_params["layers.0.attn.k.alpha"].fill_(0.0)
    assert not torch.allclose(smeared(x), plain(x), atol=1e-3)


def test_conv_starts_as_identity_and_a_shift_kernel_embeds_the_previous_token(text_tokenizer):
    conv, plain = tiny("conv", tok=text_tokenizer), tiny("none", tok=text_tokenizer)
    with torch.no_grad():
        for k, p in plain.native_params.items():
            p.copy_(conv.native_params[k.replace("tok_embed.", "tok_embed.embed.")])
    x = ids()
    assert torch.allclose(conv(x), plain(x), atol=1e-6)
    with torch.no_grad():
        kern = conv.native_params["tok_embed.kernel"]
        kern.zero_()
        kern[:, -2] = 1.0                                 # the previous token only
    _, cache = conv.run_with_cache(x)
    emb = cache["hook_embed"]
    W_E = conv.native_params["tok_embed.embed.weight"]
    assert torch.allclose(emb[:, 1:], W_E[x[:, :-1]], atol=1e-6)
    assert torch.equal(emb[:, 0], torch.zeros_like(emb[:, 0]))


def test_load_model_gives_a_native_bridge_without_a_task(tmp_path, text_tokenizer):
    from interp.models import load_checkpoint, load_model

    save_native(tiny("none", tok=text_tokenizer), tmp_path / "m", {"task": {"task": "text"}})
    bridge, task = load_model(tmp_path / "m")
    assert task is None and bridge.native_spec.mixing == "none"
    tokens = bridge.to_tokens("def f(x):\n    return x")
    assert tokens[0, 0].item() == text_tokenizer.bos_token_id
    ckpt = load_checkpoint(tmp_path / "m")     # the one loader reads every kind of checkpoint
    assert (ckpt.arch, ckpt.task_or_none, ckpt.model) == ("native", None, None)
    with pytest.raises(InterpError, match="language model .* without a task"):
        ckpt.task                      # what task commands ask first: one line, no traceback
    assert torch.equal(ckpt.bridge().to_tokens("x = 1"), bridge.to_tokens("x = 1"))


def test_weights_that_do_not_match_the_config_are_a_clear_error(tmp_path, text_tokenizer):
    save_native(tiny("none", tok=text_tokenizer), tmp_path / "m", {"task": {"task": "text"}})
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["mixing"] = "smeared"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InterpError, match="does not match config.json"):
        load_native(tmp_path / "m")


@pytest.mark.parametrize("kw, msg", [({"mixing": "blur"}, "unknown key mixing"),
                                     ({"d_model": 30, "n_heads": 4}, "not divisible"),
                                     ({"mixing": "conv", "conv_width": 1}, "conv_width"),
                                     ({"n_layers": 0}, "positive")])
def test_bad_specs_name_what_is_wrong(kw, msg):
    with pytest.raises(InterpError, match=msg):
        NativeSpec(**kw)


def test_a_failed_save_leaves_the_old_checkpoint(tmp_path, text_tokenizer, monkeypatch):
    import interp.models.native as N

    b = tiny("none", tok=text_tokenizer)
    save_native(b, tmp_path / "m", {"task": {"task": "text"}, "v": 1})
    before = (tmp_path / "m" / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError):
        N.save_native(tiny("none", tok=text_tokenizer, seed=2), tmp_path / "m", {"v": 2})
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "m" / "interp.json").read_text())["v"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
