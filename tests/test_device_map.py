"""Models split across devices (`--device-map`, `interp.models.devmap`).

The oracle is the plain HF model (GPT2LMHeadModel / T5ForConditionalGeneration) loaded on its
own from the same checkpoint, and the unsplit bridge: a split model must give the same
logits, attention cache, patching sweep and probe activations. On a machine without CUDA the
only device is the CPU, so the CPU test checks the split machinery (every mapped module moved
and hooked to run on its device, inputs routed through those hooks, the outputs returned to
the input device) with all devices equal; the test marked `gpu` splits the layers between
cuda:0 and the CPU, where every hop crosses a device."""

import json

import pytest
import torch

from interp.models import load_checkpoint

DECODER_SPLIT = {"transformer.wte": "{a}", "transformer.wpe": "{a}", "transformer.h.0": "{a}",
                 "transformer.h.1": "{b}", "transformer.ln_f": "{b}", "lm_head": "{a}"}
T5_SPLIT = {"shared": "{a}", "encoder.embed_tokens": "{a}", "decoder.embed_tokens": "{a}",
            "lm_head": "{a}", "encoder.block.0": "{a}", "encoder.block.1": "{b}",
            "encoder.final_layer_norm": "{b}", "decoder.block.0": "{b}",
            "decoder.block.1": "{a}", "decoder.final_layer_norm": "{b}"}


def split(template: dict, a: str, b: str) -> dict:
    return {k: v.format(a=a, b=b) for k, v in template.items()}


def hf_logits(path, arch, ids):
    """The oracle: HF's own model, read from the checkpoint without interp's loader."""
    from transformers import GPT2LMHeadModel, T5ForConditionalGeneration

    cls = GPT2LMHeadModel if arch == "decoder" else T5ForConditionalGeneration
    model = cls.from_pretrained(str(path), use_safetensors=True).eval()
    with torch.no_grad():
        if arch == "decoder":
            return model(ids["seq"]).logits
        return model(input_ids=ids["src"], decoder_input_ids=ids["tgt"]).logits


def check_split(path, arch, device_map, tol):
    """Logits (against HF alone), an attention cache, one patching sweep and one probe
    collection (against the unsplit bridge) of the model loaded under `device_map`."""
    import probes
    from circuits import patching as P
    from interp.cache import cache_attention
    from interp.hooks import device_of

    whole = load_checkpoint(path)
    parts = load_checkpoint(path, device_map=device_map)
    task, b0, b1 = whole.task, whole.bridge(), parts.bridge()
    placed = dict(parts.model.interp_device_map)
    entered = {}
    for name, dev in placed.items():          # each module sits, and runs, on its device
        module = parts.model.get_submodule(name)
        assert {p.device for p in module.parameters()} == {torch.device(dev)}, name
        hf = module._modules.get("_original_component", module)
        assert hf._hf_hook.execution_device == torch.device(dev), name
        mover = getattr(module, "_interp_mover", None)   # a bridge component's input hook
        if mover is not None:
            assert mover.device == torch.device(dev), name
            entered[name] = lambda m=mover, c=mover.calls: m.calls > c
        else:                                 # an HF module the bridge calls: count its hook
            seen = []
            hook = hf._hf_hook
            hook.pre_forward = (lambda f, seen: lambda *a, **k: (seen.append(1),
                                                                 f(*a, **k))[1])(
                hook.pre_forward, seen)
            entered[name] = lambda seen=seen: bool(seen)
    assert b1.cfg.n_devices == len(set(placed.values()))

    g = torch.Generator().manual_seed(0)
    if arch == "decoder":
        ids = {"seq": torch.randint(0, 20, (3, 11), generator=g)}
        logits = b1(ids["seq"])
    else:
        ids = {"src": torch.randint(0, 20, (3, 11), generator=g),
               "tgt": torch.randint(0, 20, (3, 6), generator=g)}
        logits = b1(ids["src"], decoder_input=ids["tgt"])
    assert logits.device == parts.device          # outputs come back to the input device
    assert device_of(b1) == device_of(parts.model) == parts.device    # where inputs go
    # every mapped module's inputs went through a hook that moves them to its device
    # (the T5 embedding `shared` is reached through encoder/decoder.embed_tokens)
    assert [n for n, ran in entered.items() if not ran() and n != "shared"] == []
    torch.testing.assert_close(logits.detach().cpu(), hf_logits(path, arch, ids),
                               atol=tol, rtol=0)

    examples = task.generate(4, seed=3)
    c0, c1 = cache_attention(b0, task, examples), cache_attention(b1, task, examples)
    for kind in c0.patterns:
        torch.testing.assert_close(c1.patterns[kind], c0.patterns[kind], atol=tol, rtol=0)

    pairs = P.corrupt_pairs(b0, task, n=3, field="c", answer="D_value")
    what = "resid_pre" if arch == "decoder" else "cross.head"
    r0, r1 = P.patch(b0, pairs, what), P.patch(b1, pairs, what)
    assert r0.values.abs().max() > 0
    torch.testing.assert_close(r1.per_example, r0.per_example, atol=tol, rtol=0)
    torch.testing.assert_close(r1.values, r0.values, atol=tol, rtol=0)

    a0 = probes.collect(b0, task, examples, sites=("resid_pre", "attn_out"))
    a1 = probes.collect(b1, task, examples, sites=("resid_pre", "attn_out"))
    stack = a0.stack_or_default(None)
    for site in ("resid_pre", "attn_out"):
        for layer in range(2):
            x1 = a1.get(site, layer, stack)
            assert x1.device.type == "cpu"                 # collected activations on the CPU
            torch.testing.assert_close(x1, a0.get(site, layer, stack), atol=tol, rtol=0)


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_split_map_on_cpu_matches_hf_and_the_whole_model(tiny_checkpoints, arch):
    template = DECODER_SPLIT if arch == "decoder" else T5_SPLIT
    check_split(tiny_checkpoints[arch], arch, split(template, "cpu", "cpu"), 1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_split_between_cuda_and_cpu_gives_the_single_device_figures(tiny_checkpoints, arch):
    template = DECODER_SPLIT if arch == "decoder" else T5_SPLIT
    check_split(tiny_checkpoints[arch], arch, split(template, "cuda:0", "cpu"), 1e-4)


def test_strategies_and_file_maps(tiny_checkpoints, tmp_path):
    """auto / sequential place every tensor (here: all on the CPU, the only device); a .json
    file is read like the JSON text; the placement is what `interp_device_map` records."""
    from interp.models.devmap import parse_device_map

    path = tiny_checkpoints["decoder"]
    for spec in ("auto", "sequential"):
        ckpt = load_checkpoint(path, device_map=spec)
        want = "cuda:0" if torch.cuda.is_available() else "cpu"
        assert set(ckpt.model.interp_device_map.values()) == {want}
    f = tmp_path / "map.json"
    f.write_text(json.dumps(split(DECODER_SPLIT, "cpu", "cpu")))
    assert parse_device_map(str(f)) == parse_device_map(f.read_text())
    ckpt = load_checkpoint(path, device_map=str(f))
    assert set(ckpt.model.interp_device_map) == set(DECODER_SPLIT)


# -- bad inputs: one line, exit 2, nothing written -------------------------------------
def _patch_cli(capsys, tmp_path, ckpt, *extra):
    from circuits.patch import main
    from clihelp import one_line

    out = tmp_path / "out"
    rc = main([str(ckpt), "--n", "2", "--out", str(out), "--quiet", *extra])
    err = capsys.readouterr().err
    assert not out.exists()
    return rc, err, one_line


BAD = [
    ({"transformer.wte": "cuda:3"}, "does not exist"),
    ({"transformer.wte": f"cuda:{torch.cuda.device_count()}"}, "does not exist"),  # one past
    ({"transformer.wte": "cpu:7"}, "does not exist"),
    ({"transformer.wte": "disk"}, "offloading is not supported"),
    ({"transformer.wte": "gpu"}, "not a device"),
    ("[1, 2]", "not an object"),
    ("{transformer.h.0: cpu", "not valid JSON"),
    ("everywhere", "not a strategy"),
    ({}, "empty"),
    ({**split(DECODER_SPLIT, "cpu", "cpu"), "transformer.h.7": "cpu"}, "no module"),
    ({k: v for k, v in split(DECODER_SPLIT, "cpu", "cpu").items() if k != "transformer.ln_f"},
     "transformer.ln_f"),
    ({**split(DECODER_SPLIT, "cpu", "cpu"), "transformer.h.0.attn": "cpu"}, "one inside"),
]


@pytest.mark.parametrize("spec,needle", BAD)
def test_bad_device_maps_get_one_line(tiny_checkpoints, tmp_path, capsys, spec, needle):
    text = spec if isinstance(spec, str) else json.dumps(spec)
    rc, err, one_line = _patch_cli(capsys, tmp_path, tiny_checkpoints["decoder"],
                                   "--device-map", text)
    one_line(rc, err, "--device-map", needle)


def test_tied_weights_split_and_device_conflict_and_native(tiny_checkpoints, tmp_path, capsys):
    """GPT-2's lm_head shares transformer.wte's tensor: they cannot sit apart (needs two
    devices: checked with the API on the placement, before anything moves); --device with
    --device-map; a native model refuses a map."""
    from interp.errors import InterpError
    from interp.models import build_model
    from interp.models.devmap import check_placement
    from interp.models.native import NativeSpec, build_native, save_native

    from conftest import tiny_config

    model = build_model(tiny_config("decoder"), seed=0)
    plan = split(DECODER_SPLIT, "cpu", "cpu")
    with pytest.raises(InterpError, match="tied tensor"):
        check_placement(model, {k: (torch.device("meta") if k == "lm_head" else torch.device(v))
                      for k, v in plan.items()})
    rc, err, one_line = _patch_cli(capsys, tmp_path, tiny_checkpoints["decoder"],
                                   "--device", "auto", "--device-map", "auto")
    one_line(rc, err, "--device auto and --device-map")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoints["decoder"]))
    native = tmp_path / "native"
    save_native(build_native(NativeSpec(n_layers=1, d_model=16, n_heads=2, n_ctx=16,
                                        d_vocab=len(tok)), tokenizer=tok), native,
                {"task": {"task": "text"}})
    with pytest.raises(InterpError, match="native"):
        load_checkpoint(native, device_map="auto")


# -- scripts/gpu_check.sh: its syntax, and every script it calls takes its flags ------------
def test_gpu_check_script_parses_and_its_benchmarks_take_its_flags(capsys, monkeypatch):
    import importlib.util
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = root / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text().replace("\\\n", " ")
    calls = re.findall(r"scripts/(\w+)\.py([^\n]*)", text)
    assert {c[0] for c in calls} == {"bench_classify", "bench_patching", "bench_probes"}
    assert "-m gpu" in text and "nvidia-smi" in text
    assert "for dtype in float32 bfloat16" in text
    for name, rest in calls:
        flags = set(re.findall(r"(--[\w-]+)", rest))
        assert {"--device", "--dtype"} <= flags, name
        spec = importlib.util.spec_from_file_location(f"_gc_{name}", root / "scripts" /
                                                      f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        monkeypatch.setattr(sys, "argv", [name, "--help"])
        with pytest.raises(SystemExit) as done:
            try:
                mod.main(["--help"])
            except TypeError:                       # a main() that reads sys.argv
                mod.main()
        assert done.value.code == 0
        shown = capsys.readouterr().out
        for flag in flags:
            assert re.search(rf"{flag}\b", shown), (name, flag)
        assert "bfloat16" in shown, name


def test_an_hf_directory_splits_too(tiny_bert_dir):
    """A plain HF directory (booted by the bridge, then split): its logits against HF's own
    BertForMaskedLM, and each mapped module hooked to run on its device."""
    from transformers import BertForMaskedLM

    from interp.models import load_model

    plan = {"bert.embeddings": "cpu", "bert.encoder.layer.0": "cpu",
            "bert.encoder.layer.1": "cpu", "cls": "cpu"}
    bridge, _ = load_model(tiny_bert_dir, device_map=json.dumps(plan))
    ids = torch.randint(5, 15, (2, 7), generator=torch.Generator().manual_seed(1))
    hf = BertForMaskedLM.from_pretrained(str(tiny_bert_dir)).eval()
    with torch.no_grad():
        torch.testing.assert_close(bridge(ids), hf(ids).logits, atol=1e-5, rtol=0)
    layer = bridge.original_model.get_submodule("bert.encoder.layer.1")
    assert layer.original_component._hf_hook.execution_device == torch.device("cpu")
    assert bridge.original_model.interp_device_map == plan


# -- attribution with the QK fix: on one CUDA device as on the CPU; a split model takes AtP --
@pytest.mark.gpu
def test_atp_with_the_qk_fix_on_cuda_equals_the_cpu_result(tiny_checkpoints):
    from circuits.patching import attribute, corrupt_pairs

    got = {}
    for device in ("cpu", "cuda"):
        ckpt = load_checkpoint(tiny_checkpoints["decoder"], device)
        bridge = ckpt.bridge()
        pairs = corrupt_pairs(bridge, ckpt.task, n=3, seed=0)
        got[device] = attribute(bridge, pairs, "resid_pre", method="atp+qkv").values
    assert got["cuda"].device.type == "cpu"
    assert torch.allclose(got["cuda"], got["cpu"], atol=1e-4), \
        (got["cuda"] - got["cpu"]).abs().max()


def test_a_split_model_refuses_the_qk_fix_and_the_command_defaults_to_plain_atp(
        tiny_checkpoints):
    from circuits.patch import default_attribution
    from interp.errors import InterpError
    from circuits.patching import attribute, corrupt_pairs

    ckpt = load_checkpoint(tiny_checkpoints["decoder"],
                           device_map=split(DECODER_SPLIT, "cpu", "cpu"))
    bridge = ckpt.bridge()
    assert bridge.cfg.n_devices == 1          # both halves on the CPU: one device here
    bridge.cfg.n_devices = 2                  # as a cuda:0 + cpu split records it
    assert default_attribution(bridge) == "atp"
    whole = load_checkpoint(tiny_checkpoints["decoder"]).bridge()
    assert default_attribution(whole) != "atp"
    pairs = corrupt_pairs(bridge, ckpt.task, n=2, seed=0)
    with pytest.raises(InterpError, match="split across devices"):
        attribute(bridge, pairs, "resid_pre", method="atp+qkv")
