"""Induction analysis and text training on a reduced-precision model: the command runs with
`--device cpu --dtype bfloat16`, the library returns CPU float32 tables close to float32's,
and the notebook surface (`analyse(...).frame()` / `.figure()`) holds."""

import json

import pandas as pd
import pytest
import torch


@pytest.fixture(scope="module")
def native_ckpt(tmp_path_factory):
    """A tiny 2-layer native model with smeared keys and a word-level tokenizer, saved."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from interp.models.native import NativeSpec, build_native, save_native

    vocab = ["<pad>", "<bos>", "<eos>"] + [f"w{i}" for i in range(61)]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                  eos_token="<eos>")
    path = tmp_path_factory.mktemp("native") / "smeared2l"
    spec = NativeSpec(n_layers=2, d_model=32, n_heads=4, n_ctx=32, d_vocab=len(vocab),
                      mixing="smeared")
    save_native(build_native(spec, seed=1, tokenizer=tok), path, {"task": {"task": "test"}})
    return path


def bridge_in(path, dtype):
    from interp.models import load_checkpoint

    return load_checkpoint(path, "cpu", dtype).bridge()


def test_the_induction_command_runs_in_bfloat16_and_agrees_with_float32(native_ckpt,
                                                                        tmp_path, capsys):
    from circuits.induction.__main__ import main

    for dtype in ("float32", "bfloat16"):
        assert main([str(native_ckpt), "--n", "4", "--device", "cpu", "--dtype", dtype,
                     "--out", str(tmp_path / dtype), "--quiet"]) == 0
    assert "smeared keys, layer 0" in capsys.readouterr().out
    got, want = (json.loads((tmp_path / d / "induction.json").read_text())
                 for d in ("bfloat16", "float32"))
    assert got["mechanism"] is not None and got["unmixing"] is not None
    for col in ("induction", "prefix_matching", "previous_token", "copying"):
        assert [r[col] for r in got["heads"]] == pytest.approx(
            [r[col] for r in want["heads"]], abs=0.05), col
    assert (tmp_path / "bfloat16" / "report.html").stat().st_size > 10_000


def test_scores_of_a_bfloat16_model_come_back_as_cpu_float32(native_ckpt):
    from interp.attention.induction import model_patterns, score_prompts, token_losses
    from interp.models.native import mixing_weights

    b = bridge_in(native_ckpt, "bfloat16")
    assert next(b.parameters()).dtype == torch.bfloat16
    ids, half, _, _ = score_prompts(b, 3)
    P = model_patterns(b, ids)
    assert P.shape == (2, 3, 4, 2 * half + 1, 2 * half + 1)
    losses = token_losses(b, ids)
    mix = mixing_weights(b)["smear"]
    for t in (P, losses, mix):
        assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert torch.allclose(P.sum(-1), torch.ones(()), atol=0.02)


def test_the_analysis_is_a_result_with_a_frame_and_a_figure(native_ckpt):
    from circuits.induction import InductionResult, analyse, head_scores

    b = bridge_in(native_ckpt, None)
    res = analyse(b, n=4)
    assert isinstance(res, InductionResult)
    assert isinstance(res.frame(), pd.DataFrame)
    assert res.frame().induction.tolist() == head_scores(b, n=4).induction.tolist()
    assert [bar.name for bar in res.figure().data][:2] == ["induction", "prefix"]
    assert isinstance(res.composition, pd.DataFrame) and res.icl is None
    assert res.example["pattern"].dtype == torch.float32


def test_text_training_runs_under_bfloat16_autocast_and_saves_float32(tmp_path):
    from safetensors.torch import load_file

    from interp.training.text import TextTrainConfig, train_text

    cfg = TextTrainConfig(model="attn1l", steps=2, batch_size=2, n_ctx=32, d_model=32,
                          n_heads=4, vocab=300, warmup=1, eval_every=2, eval_windows=2,
                          files=40)
    bridge, meta = train_text(cfg, tmp_path / "lm", dtype="bfloat16")
    assert [r["step"] for r in meta["history"]] == [0, 2]
    assert all(torch.isfinite(torch.tensor(r["val_loss"])) for r in meta["history"])
    assert "device" not in meta["recipe"] and "dtype" not in meta["recipe"]
    tensors = load_file(str(tmp_path / "lm" / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.float32}
