"""Exact patching on native decoders (plain attention, smeared keys, conv embedding, with and
without an MLP) and on a bidirectional (tracr-like) one.

Oracle: a plain TransformerLens forward per patch (`run_with_hooks`, one hook writing the
clean run's activation into one cell), the metric read from its logits here. The pairs
differ at every position (the first one included), so every cell is run, the fast path's
edge cases (a patch at position 0, the smeared key of p - 1) among them."""

import json

import pytest
import torch

from circuits.patching import Pairs, patch, site
from circuits.patching.fast_native import NativeTail
from interp.errors import InterpError
from interp.models.native import NativeSpec, build_native

T, N = 7, 2
HOOKS = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out",
         "mlp_out": "hook_mlp_out", "head": "attn.hook_z", "head_pos": "attn.hook_z",
         "pattern": "attn.hook_pattern"}


def model(mixing="none", d_mlp=0, attention="causal", seed=0):
    b = build_native(NativeSpec(n_layers=2, d_model=16, n_heads=2, n_ctx=16, d_vocab=40,
                                mixing=mixing, d_mlp=d_mlp, attention=attention), seed=seed)
    with torch.no_grad():                       # make the mixing far from its start
        for k, p in b.native_params.items():
            if k.endswith("alpha") or k.endswith("kernel"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    return b


def random_pairs(seed=0):
    """Planted pairs: clean and corrupted sequences drawn independently (they differ at
    every position), two random answer tokens."""
    g = torch.Generator().manual_seed(seed)
    clean, bad = torch.randint(0, 40, (N, T), generator=g), torch.randint(0, 40, (N, T), generator=g)
    good, other = torch.randint(0, 40, (2, N), generator=g)
    labels = [str(i) for i in range(T)]
    return Pairs("decoder", {"seq": clean}, {"seq": bad}, T - 1, good, other,
                 {"seq": labels}, {"seq": labels})


def oracle(b, pairs, what):
    """Per cell and pair, the logit difference of a plain hooked forward of the corrupted
    input with the clean activation written into that cell: [*cell axes, pair]."""
    L, H = 2, 2
    _, cache = b.run_with_cache(pairs.clean["seq"])
    cells = {"resid_pre": [(l, p) for l in range(L) for p in range(T)],
             "head": [(l, h) for l in range(L) for h in range(H)],
             "pattern": [(l, h) for l in range(L) for h in range(H)]}
    cells["attn_out"] = cells["mlp_out"] = cells["resid_pre"]
    cells["head_pos"] = [(l, h, p) for l in range(L) for h in range(H) for p in range(T)]
    out = torch.zeros(*{"resid_pre": (L, T), "head": (L, H), "pattern": (L, H),
                        "head_pos": (L, H, T)}.get(what, (L, T)), N)
    rows = torch.arange(N)
    for cell in cells[what]:
        name = f"blocks.{cell[0]}.{HOOKS[what]}"

        def put(a, hook, cell=cell):
            a = a.clone()
            if what == "head_pos":            # z: [b, pos, head, d_head]
                a[:, cell[2], cell[1]] = cache[hook.name][:, cell[2], cell[1]]
            elif what == "head":
                a[:, :, cell[1]] = cache[hook.name][:, :, cell[1]]
            else:                             # [b, pos, d] or pattern [b, head, q, k]
                a[:, cell[1]] = cache[hook.name][:, cell[1]]
            return a
        with torch.no_grad():
            last = b.run_with_hooks(pairs.corrupt["seq"], fwd_hooks=[(name, put)])[:, -1]
        out[cell] = last[rows, pairs.clean_token] - last[rows, pairs.corrupt_token]
    return out


CASES = [("none", 0, "causal"), ("smeared", 12, "causal"), ("conv", 0, "causal"),
         ("none", 12, "bidirectional")]


@pytest.mark.parametrize("mixing,d_mlp,attention", CASES,
                         ids=["attn-only", "smeared+mlp", "conv", "bidirectional"])
def test_every_site_equals_one_plain_forward_per_patch(mixing, d_mlp, attention,
                                                       monkeypatch):
    import circuits.patching.experiments as ex

    b = model(mixing, d_mlp, attention)
    pairs = random_pairs()
    tails = []
    real = ex.native_patch
    monkeypatch.setattr(ex, "native_patch",        # record the sites it completes
                        lambda *a: (real(*a), tails.append(a[2].name))[0])
    sites = ["resid_pre", "attn_out", "head_pos", "head", "pattern"] + \
        (["mlp_out"] if d_mlp else [])
    for what in sites:
        want = oracle(b, pairs, what)
        assert float(want.std()) > 1e-3               # the patches move the metric
        got = patch(b, pairs, what)
        assert torch.allclose(got.per_example, want, atol=1e-4), what
        if "pos" in got.axes and what != "head":     # the fast path against the batched one
            batched = patch(b, pairs, what, fast=False)
            assert torch.allclose(got.per_example, batched.per_example, atol=1e-5), what
    fast = [s for s in sites if s in ("resid_pre", "attn_out", "head_pos", "mlp_out")]
    # causal models take the fast path on every position-wise site; bidirectional never
    assert tails == (fast if attention == "causal" else [])


def test_the_fast_path_refuses_what_it_cannot_do_exactly():
    NativeTail(model("smeared"))
    with pytest.raises(NotImplementedError):         # a patch at p changes earlier positions
        NativeTail(model(attention="bidirectional"))


def test_an_attention_only_model_refuses_mlp_out_in_one_line():
    with pytest.raises(InterpError, match="attention-only.*resid_pre, attn_out, head, "
                                          "head_pos, pattern"):
        site(model(), "mlp_out")
    assert site(model(d_mlp=12), "mlp_out").hook == "hook_mlp_out"


# ---------------------------------------------------------------------------------------
# the command on a saved native language model: induction pairs
@pytest.fixture(scope="module")
def native_ckpt(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from interp.models.native import save_native

    vocab = ["<pad>", "<bos>", "<eos>"] + [f"w{i}" for i in range(37)]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                  eos_token="<eos>")
    path = tmp_path_factory.mktemp("native") / "attn2l"
    save_native(build_native(NativeSpec(n_layers=2, d_model=16, n_heads=2, n_ctx=32,
                                        d_vocab=len(vocab)), seed=0, tokenizer=tok),
                path, {"task": {"task": "text"}})
    return path


def test_the_command_patches_a_language_model_on_induction_pairs(native_ckpt, tmp_path,
                                                                 capsys):
    from circuits.discovery.induction import induction_pairs
    from circuits.patch import main
    from interp.models import load_model

    out = tmp_path / "r.json"
    assert main([str(native_ckpt), "--n", "3", "--seed", "4", "--json", str(out),
                 "--no-attribution", "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert list(data["sites"]) == ["resid_pre", "attn_out", "head", "head_pos"]  # no MLP
    b, _ = load_model(native_ckpt)
    want = patch(b, induction_pairs(b, n=3, seed=4), "head_pos")
    assert torch.allclose(torch.tensor(data["sites"]["head_pos"]["values"]), want.values,
                          atol=1e-6)
    side = data["example"]["sides"]["seq"]         # the pairs differ at one position: prev
    assert [i for i, (c, d) in enumerate(zip(side["clean"], side["corrupt"])) if c != d] == \
        [side["roles"].index("prev")]
    assert data["example"]["clean_answer"] == b.tokenizer.decode(
        [int(induction_pairs(b, n=3, seed=4).clean_token[0])])


@pytest.mark.parametrize("extra,needle", [
    (["--corrupt", "b"], "--corrupt"), (["--slices"], "--slices"),
    (["--answer-token", "digit"], "--answer-token"), (["--sites", "mlp_out"], "attention-only")])
def test_the_command_refuses_task_options_and_absent_sites_in_one_line(
        native_ckpt, tmp_path, capsys, extra, needle):
    from circuits.patch import main
    from clihelp import one_line

    rc = main([str(native_ckpt), "--n", "2", "--out", str(tmp_path / "o"), *extra])
    one_line(rc, capsys.readouterr().err, needle)
    assert not (tmp_path / "o").exists()
