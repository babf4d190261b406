"""Checkpoints: save -> load through TransformerBridge, hook names, and every bad input."""

import json
import shutil

import pytest
import torch
from conftest import tiny_config

from interp.errors import InterpError
from interp.models import build_model, load_checkpoint, load_model, save_checkpoint
from interp.models.generate import greedy_decode
from interp.tasks import CharCodec, get_task
from interp.tokens import make_batch

PAIRS = [("7x^2+3556x+451612=0", "D=(3556^2"), ("1x^2-2x+1=0", "D=(-2^2-4*1*1)=0;")]


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_save_then_load_gives_identical_logits_through_the_bridge(tmp_path, arch):
    cfg = tiny_config(arch)
    model = build_model(cfg, seed=4).eval()
    task = get_task("quadratic", "seed")
    save_checkpoint(model, tmp_path / "m", {"task": task.describe(), "model": cfg.to_dict()})
    bridge, loaded_task = load_model(tmp_path / "m")
    assert loaded_task.describe() == task.describe()
    assert not bridge.training
    b = make_batch(arch, CharCodec(), PAIRS, cfg.n_ctx)
    with torch.no_grad():
        if arch == "decoder":
            ref = model(input_ids=b.input_ids).logits
            got, cache = bridge.run_with_cache(b.input_ids)
            names = [f"blocks.{l}.attn.hook_pattern" for l in range(cfg.n_layers)]
        else:
            ref = model(input_ids=b.input_ids, decoder_input_ids=b.decoder_input_ids).logits
            got, cache = bridge.run_with_cache(b.input_ids, decoder_input=b.decoder_input_ids)
            names = [f"{kind}.{l}.{attn}.hook_pattern" for l in range(cfg.n_layers)
                     for kind, attn in (("encoder_blocks", "attn"),
                                        ("decoder_blocks", "self_attn"),
                                        ("decoder_blocks", "cross_attn"))]
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    for name in names:
        pat = cache[name]
        assert pat.shape[1] == cfg.n_heads
        assert torch.allclose(pat.sum(-1), torch.ones_like(pat.sum(-1)), atol=1e-5)
    if arch == "t5":
        cross = cache["decoder_blocks.0.cross_attn.hook_pattern"]
        assert cross.shape[-2:] == (b.decoder_input_ids.shape[1], b.input_ids.shape[1])


def test_bridge_uses_the_saved_tokenizer(tiny_checkpoints):
    bridge, _ = load_model(tiny_checkpoints["decoder"])
    ids = bridge.to_tokens("7x^2=0")
    assert bridge.tokenizer.decode(ids[0, 1:]) == "7x^2=0"
    assert ids.shape[1] == 7  # <bos> + one token per character


def test_greedy_decode_matches_a_step_by_step_argmax(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    codec = CharCodec()
    srcs = ["1x^2-2x+1=0", "7x^2+3556x+451612=0", "2x^2+1x+1=0"]
    outs = greedy_decode(ckpt.model, "decoder", srcs, 40, max_new_tokens=12)
    for src, out in zip(srcs, outs):
        ids = [codec.bos] + codec.encode(src) + [codec.sep]
        ref = []
        with torch.no_grad():
            for _ in range(12):
                nxt = int(ckpt.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
                if nxt == codec.eos:
                    break
                ids.append(nxt)
                ref.append(nxt)
        assert out == codec.decode(ref)


def test_greedy_decode_on_a_bridged_model_equals_plain_hf_argmax(tiny_checkpoints):
    """Booting a TransformerBridge rewires the HF model in place; decoding with that model
    must still give what a separately loaded, untouched HF model gives step by step (with
    transformers >= 5.24 and TransformerLens 4.3, HF's cached generation through the bridge's
    attention ignored the cache and drifted after a few dozen tokens)."""
    from interp.models.generate import wrapped_by_bridge

    plain = load_checkpoint(tiny_checkpoints["decoder"])
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    ckpt.bridge()
    assert wrapped_by_bridge(ckpt.model) and not wrapped_by_bridge(plain.model)
    codec = CharCodec()
    srcs = [e.src for e in plain.task.generate(6, seed=2)]
    outs = greedy_decode(ckpt.model, "decoder", srcs, 128, max_new_tokens=90)
    for src, out in zip(srcs, outs):
        ids = [codec.bos] + codec.encode(src) + [codec.sep]
        start = len(ids)
        with torch.no_grad():
            while len(ids) < start + 90:
                nxt = int(plain.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
                if nxt == codec.eos:
                    break
                ids.append(nxt)
        assert out == codec.decode(ids[start:])


def test_t5_greedy_decode_is_batch_independent(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["t5"])
    srcs = ["1x^2-2x+1=0", "7x^2+3556x+451612=0", "2x^2+1x+1=0"]
    together = greedy_decode(ckpt.model, "t5", srcs, 30)
    alone = [greedy_decode(ckpt.model, "t5", [s], 30)[0] for s in srcs]
    assert together == alone


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(InterpError, match="no checkpoint directory or shipped model"):
        load_model(tmp_path / "nope")


def test_missing_weights_are_named(tiny_checkpoints, tmp_path):
    d = _copy(tiny_checkpoints["decoder"], tmp_path)
    (d / "model.safetensors").unlink()
    with pytest.raises(InterpError, match="lacks model.safetensors"):
        load_model(d)


def test_corrupt_weights_are_caught(tiny_checkpoints, tmp_path):
    d = _copy(tiny_checkpoints["decoder"], tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InterpError, match="corrupt or truncated"):
        load_model(d)


def test_weights_of_another_model_are_refused(tiny_checkpoints, tmp_path):
    d = _copy(tiny_checkpoints["decoder"], tmp_path)
    bigger = build_model(tiny_config("decoder").__class__(arch="decoder", n_layers=3, d_model=32,
                                                          n_heads=4, d_ff=64, n_ctx=128))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in bigger.state_dict().items() if "lm_head" not in k},
              str(d / "model.safetensors"))
    with pytest.raises(InterpError, match="must come from the same model"):
        load_model(d)


def test_pickled_weights_are_refused(tiny_checkpoints, tmp_path):
    d = _copy(tiny_checkpoints["decoder"], tmp_path)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InterpError, match="pickled weights"):
        load_model(d)


def test_unknown_architecture_is_named(tiny_checkpoints, tmp_path):
    d = _copy(tiny_checkpoints["decoder"], tmp_path)
    meta = json.loads((d / "interp.json").read_text())
    meta["model"]["arch"] = "mamba"
    (d / "interp.json").write_text(json.dumps(meta))
    with pytest.raises(InterpError, match="unknown architecture"):
        load_model(d)


def test_prompt_longer_than_the_context_is_an_error(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    with pytest.raises(InterpError, match="context is 12"):
        greedy_decode(ckpt.model, "decoder", ["7x^2+3556x+451612=0"], n_ctx=12)
    with pytest.raises(InterpError, match="context is 8"):
        make_batch("t5", CharCodec(), PAIRS, 8)


def test_a_failed_save_leaves_the_old_checkpoint_intact(tiny_checkpoints, tmp_path, monkeypatch):
    d = _copy(tiny_checkpoints["decoder"], tmp_path)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    model = build_model(tiny_config("decoder"), seed=99)
    import interp.tasks.tokenizer as tk

    def boom(directory):
        raise OSError("disk full")
    monkeypatch.setattr(tk, "save_tokenizer", boom)
    with pytest.raises(OSError):
        save_checkpoint(model, d, {"model": {}})
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    load_model(d)


def test_plain_boot_transformers_finds_the_vocabulary_in_the_directory(tiny_checkpoints):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(tiny_checkpoints["decoder"]))
    assert bridge.tokenizer.get_vocab()["x"] == CharCodec().vocab["x"]
    assert bridge.to_str_tokens("x^2")[1:] == ["x", "^", "2"]
