"""Route knockout against oracles: HF's own attention mask, the pattern renormalised by hand,
identity when nothing is cut, and a route planted in a tiny model (found; a random route not)."""

import json

import numpy as np
import pytest
import torch

from circuits import ablation as A
from circuits.ablation import routes as R
from circuits.ablation.interventions import _head_knock, _t5_head_knock, head_hooks
from clihelp import one_line
from interp.errors import InterpError
from interp.hooks import capture, hook_name
from interp.models import load_checkpoint


@pytest.fixture(scope="module", params=["decoder", "t5"])
def model(request, tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints[request.param])
    return ckpt, ckpt.bridge()


def whole_batch(prep):
    w = {k: int(s.lengths.max()) for k, s in prep.sides.items()}
    ids = {k: s.ids[:, :w[k]] for k, s in prep.sides.items()}
    valid = {k: s.valid[:, :w[k]] for k, s in prep.sides.items()}
    return w, ids, valid


def knock_hooks(bridge, prep, kos, w):
    """Hooks cutting each knockout's target in its head (several heads: hooks chained)."""
    tl, pre = [], []
    for ko in kos:
        cut = R.target_cut(prep, ko)
        k = R.KINDS[ko.kind]
        wq, wk = w[R._side(prep, k.query_side)], w[R._side(prep, k.key_side)]
        a, b = head_hooks(bridge, prep.arch, {(ko.kind, ko.layer): (
            torch.full((prep.n,), ko.head), cut[:, :wq, :wk])})
        tl += a
        pre += b
    return tl, pre


def test_a_knockout_that_cuts_nothing_changes_nothing_bit_for_bit(model):
    ckpt, bridge = model
    prep = A.prepare(bridge, ckpt.task, ckpt.task.generate(6, seed=0))
    w, ids, valid = whole_batch(prep)
    clean = A.forward(bridge, prep.arch, ids, valid)
    kind = "self" if prep.arch == "decoder" else "cross"
    q, k = ("seq", "seq") if prep.arch == "decoder" else ("tgt", "src")
    empty = torch.zeros(prep.n, w[q], w[k], dtype=torch.bool)
    heads = torch.zeros(prep.n, dtype=torch.long)
    # the hook itself, run on an empty cut (head_hooks would not even attach it)
    if prep.arch == "decoder":
        hooks = ([(hook_name(bridge, kind, 1, "hook_pattern"), _head_knock(heads, empty))], [])
    else:
        hooks = ([], [(A.interventions._attention(bridge, kind, 1), _t5_head_knock(heads, empty))])
    assert torch.equal(A.forward(bridge, prep.arch, ids, valid, hooks), clean)
    # a route whose cut is empty (a causal head: input queries never read solution keys)
    ko = R.parse_route("L1H0:a->x1" if prep.arch == "decoder" else "dec.L1H0:<start>->x1",
                       prep.arch)
    assert not R.target_cut(prep, ko).any()
    res = R.ablate_route(bridge, ckpt.task, prep.examples, [ko], n_controls=0)
    base = A.run_condition(bridge, prep)
    s = res.frame().set_index("measure")
    assert s.loc["answer_loss", "target"] == float(np.nanmean(base.loss.numpy()))
    run_ = R.run_cuts(bridge, prep, [(ko, R.target_cut(prep, ko))])[0]
    assert torch.equal(run_.loss, base.loss) and torch.equal(run_.exact, base.exact)


@pytest.mark.parametrize("kinds", [("self",), ("encoder", "cross"), ("decoder_self",)],
                         ids=["decoder", "t5-encoder+cross", "t5-decoder-self"])
def test_cutting_keys_from_every_query_in_every_head_equals_hf_attention_mask(
        tiny_checkpoints, kinds):
    """Every head of every layer of the kinds cut: HF's own attention mask on those keys."""
    arch = "decoder" if kinds == ("self",) else "t5"
    ckpt = load_checkpoint(tiny_checkpoints[arch])
    bridge = ckpt.bridge()
    prep = A.prepare(bridge, ckpt.task, ckpt.task.generate(8, seed=3))
    w, ids, valid = whole_batch(prep)
    keys = ("x", "^", "=")
    kos = [R.HeadKnockout(kind, l, h, keys=keys) for kind in kinds for l in range(2)
           for h in range(4)]
    with torch.no_grad():
        got = A.forward(bridge, prep.arch, ids, valid, knock_hooks(bridge, prep, kos, w))
        clean = A.forward(bridge, prep.arch, ids, valid)
        side = {"self": "seq", "encoder": "src", "decoder_self": "tgt"}[kinds[0]]
        hit = torch.zeros_like(valid[side])
        for i, roles in enumerate(prep.sides[side].roles):
            for p, r in enumerate(roles):
                hit[i, p] = r in keys
        if arch == "decoder":
            ref = ckpt.model(input_ids=ids["seq"], attention_mask=(valid["seq"] & ~hit).long()
                             ).logits
            where = valid["seq"]
        else:
            src = valid["src"] & ~hit if side == "src" else valid["src"]
            tgt = (valid["tgt"] & ~hit).long() if side == "tgt" else None
            ref = ckpt.model(input_ids=ids["src"], attention_mask=src.long(),
                             decoder_input_ids=ids["tgt"], decoder_attention_mask=tgt).logits
            where = valid["tgt"]
    assert hit.any()
    assert (got - ref)[where].abs().max() < 1e-4
    assert (got - clean)[where].abs().max() > 1e-2     # the knockout did something


@pytest.mark.parametrize("spec", ["L1H2:D_value->b,c", "L1H1:offset=1", "L0H3:token=="])
def test_one_head_selected_rows_lose_their_keys_and_renormalise(tiny_checkpoints, spec):
    """Read back with capture: the other heads and the unselected queries are untouched, the
    selected rows are zero on the cut keys, sum to 1, and are the clean row rescaled."""
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    bridge = ckpt.bridge()
    prep = A.prepare(bridge, ckpt.task, ckpt.task.generate(8, seed=5))
    w, ids, valid = whole_batch(prep)
    ko = R.parse_route(spec)
    cut = R.target_cut(prep, ko)[:, :w["seq"], :w["seq"]]
    name = hook_name(bridge, "self", ko.layer, "hook_pattern")
    kw = {"attention_mask": valid["seq"].long()}
    clean = capture(bridge, ids["seq"], names=[name], **kw)[name]
    hooks = knock_hooks(bridge, prep, [ko], w)[0]
    got = capture(bridge, ids["seq"], names=[name], hooks=hooks, **kw)[name]
    rows = cut.any(-1)                                   # [N, Q] the selected queries
    assert rows.any() and (~rows & valid["seq"]).any()
    others = [h for h in range(4) if h != ko.head]
    assert torch.equal(got[:, others], clean[:, others])
    g, c = got[:, ko.head], clean[:, ko.head]
    assert torch.equal(g[~rows], c[~rows])
    assert float(g[cut].abs().max()) == 0.0
    assert torch.allclose(g[rows].sum(-1), torch.ones(int(rows.sum())), atol=1e-5)
    kept = c.masked_fill(cut, 0)
    want = kept / kept.sum(-1, keepdim=True)
    assert torch.allclose(g[rows], want[rows], atol=1e-6)


def test_t5_cross_knockout_reads_back_renormalised_in_one_head(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["t5"])
    bridge = ckpt.bridge()
    prep = A.prepare(bridge, ckpt.task, ckpt.task.generate(6, seed=2))
    w, ids, valid = whole_batch(prep)
    ko = R.parse_route("cross.L1H2:D_value->b,c", "t5")
    cut = R.target_cut(prep, ko)[:, :w["tgt"], :w["src"]]
    name = hook_name(bridge, "cross", 1, "hook_pattern")
    kw = {"attention_mask": valid["src"].long(), "decoder_input": ids["tgt"]}
    clean = capture(bridge, ids["src"], names=[name], **kw)[name]
    tl, pre = knock_hooks(bridge, prep, [ko], w)
    got = capture(bridge, ids["src"], names=[name], pre_hooks=pre, **kw)[name]
    rows = cut.any(-1)
    assert rows.any()
    assert torch.allclose(got[:, [0, 1, 3]], clean[:, [0, 1, 3]], atol=1e-6)
    g, c = got[:, 2], clean[:, 2]
    assert torch.allclose(g[~rows], c[~rows], atol=1e-6)
    assert float(g[cut].abs().max()) == 0.0
    kept = c.masked_fill(cut, 0)
    assert torch.allclose(g[rows], (kept / kept.sum(-1, keepdim=True))[rows], atol=1e-5)


def test_a_row_left_without_keys_is_an_error(model):
    ckpt, bridge = model
    prep = A.prepare(bridge, ckpt.task, ckpt.task.generate(4, seed=0))
    kind = "self" if prep.arch == "decoder" else "encoder"
    every = tuple({R.group_role(r) for roles in prep.sides[prep.main_side].roles for r in roles})
    with pytest.raises(InterpError, match="removes every key"):
        R.target_cut(prep, R.HeadKnockout(kind, 0, 0, keys=every))
    # the hook refuses it too, should a cut reach it unchecked
    w, ids, valid = whole_batch(prep)
    if prep.arch == "decoder":
        cut = torch.ones(prep.n, w["seq"], w["seq"], dtype=torch.bool)
        hooks = ([(hook_name(bridge, "self", 0, "hook_pattern"),
                   _head_knock(torch.zeros(prep.n, dtype=torch.long), cut))], [])
        with pytest.raises(InterpError, match="removes every key"):
            A.forward(bridge, prep.arch, ids, valid, hooks)


def test_a_diagonal_knockout_leaves_out_rows_whose_only_key_it_is(tiny_checkpoints):
    """`sharp_diagonal(0)` on a causal model: position 0 sees only itself, so its row is left
    out; every other real row loses exactly its own key (oracle: the masks by hand)."""
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    prep = A.prepare(ckpt.bridge(), ckpt.task, ckpt.task.generate(4, seed=0))
    cut = R.target_cut(prep, R.parse_route("L0H0:offset=0"))
    valid = prep.sides["seq"].valid[:, :cut.shape[1]]
    want = torch.diag_embed(valid)
    want[:, 0, 0] = False
    assert torch.equal(cut, want)
    with pytest.raises(InterpError, match="removes every key"):   # a route still refuses
        R.target_cut(prep, R.HeadKnockout("self", 0, 0, queries=None, keys=("<bos>",)))
    # a stripe on <bos> leaves out position 0 (it reads only <bos>) and cuts <bos> elsewhere
    cut = R.target_cut(prep, R.parse_route("L0H0:token=<bos>"))
    want = valid[:, :, None] & torch.zeros_like(cut)
    want[:, 1:, 0] = valid[:, 1:]
    assert torch.equal(cut, want)
    for spec in ("L0H0:<bos>->offset=0", "L0H0:<bos>->token=<bos>"):   # nothing left to cut
        with pytest.raises(InterpError, match="cuts nothing") as e:
            R.target_cut(prep, R.parse_route(spec))
        assert "\n" not in str(e.value)


def test_controls_cut_as_many_other_allowed_keys_matched_in_mass():
    """Hand-built rows: the target is key 0 (mass 0.4); among the others one key weighs 0.4
    too, so the best of the draws finds it; sizes, exclusions and causality by loops."""
    n, w = 3, 6
    ok = torch.ones(n, w, w, dtype=torch.bool).tril().repeat(1, 1, 1)
    cut = torch.zeros(n, w, w, dtype=torch.bool)
    cut[:, 3:, 0] = True                              # queries 3..5 lose key 0
    cut[1, 5, 1] = True                               # one row loses two keys
    pattern = torch.zeros(n, w, w)
    for q in range(w):
        pattern[:, q, : q + 1] = 1.0 / (q + 1)
    pattern[:, 3:, :] = 0
    pattern[:, 3:, 0], pattern[:, 3:, 2] = 0.4, 0.4
    for q in range(3, w):
        pattern[:, q, 3:q + 1] = 0.2 / (q - 2)
    ctl, tm, cm = R.control_cuts(cut, ok, pattern, 7, np.random.default_rng(0))
    assert len(ctl) == 7
    for c in ctl:
        assert not (c & cut).any() and not (c & ~ok).any()
        assert torch.equal(c.sum(-1), cut.sum(-1))    # as many keys, row by row
    rows = cut.sum(-1) == 1
    assert all(bool(c[rows][:, 2].all()) for c in ctl)   # the 0.4 key: an exact match
    masses = [(pattern * cut).sum(-1)[cut.any(-1)]]
    assert tm == pytest.approx(float(torch.cat(masses).mean()))
    want = [float((pattern * c).sum(-1)[cut.any(-1)].mean()) for c in ctl]
    assert cm == pytest.approx(np.mean(want))
    again = R.control_cuts(cut, ok, pattern, 7, np.random.default_rng(0))[0]
    assert all(torch.equal(a, b) for a, b in zip(ctl, again))      # seeded


def test_parse_route_reads_specs_and_refuses_bad_ones_in_one_line():
    ko = R.parse_route("L2H0:D_value->b,c")
    assert (ko.kind, ko.layer, ko.head, ko.queries, ko.keys) == ("self", 2, 0, ("D_value",),
                                                                  ("b", "c"))
    assert R.parse_route(ko.spec) == ko
    assert R.parse_route("L1H2:offset=1").offset == 1
    assert R.parse_route("L1H2:token==").token == "="
    assert R.parse_route("L0H0:->b").queries is None
    assert R.parse_route("L0H0:*->b").queries == ("*",)     # resolved against the groups
    assert R.parse_route("L0H0:-->b").queries == ("-",)
    t5 = R.parse_route("cross.L1H3:D_value->b", "t5")
    assert (t5.kind, t5.spec) == ("cross", "cross.L1H3:D_value->b")
    assert R.parse_route("enc.L0H1:offset=-1", "t5").kind == "encoder"
    for spec, arch, needle in [("L2H0", "decoder", "cannot read route"),
                               ("L2H0:b", "decoder", "Q->K"),
                               ("L2H0:D_value->b,,c", "decoder", "empty group"),
                               ("L2H0:offset=x", "decoder", "integer"),
                               ("L2H0:D_value->b", "t5", "enc., dec. or cross."),
                               ("cross.L2H0:D_value->b", "decoder", "drop the cross."),
                               ("cross.L0H0:offset=1", "t5", "no diagonal")]:
        with pytest.raises(InterpError, match=needle) as e:
            R.parse_route(spec, arch)
        assert "\n" not in str(e.value)


def test_a_lone_star_names_the_multiplication_sign_where_there_is_one(tiny_checkpoints):
    """The taxonomy's `routed(*->a,c)` reads from the queries at the solution's `*` tokens;
    `*->` means every query only where no position is a `*`. Oracle: the token strings."""
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    prep = A.prepare(ckpt.bridge(), ckpt.task, ckpt.task.generate(6, seed=3))
    w = prep.sides["seq"].ids.shape[1]          # the row: <bos> src <sep> tgt, one char each
    text = [("\0" + e.src + "\0" + e.tgt).ljust(w, "\0")[:w] for e in prep.examples]
    star = torch.tensor([[c == "*" for c in t] for t in text]) & prep.sides["seq"].valid
    assert star.any()
    for ko in (R.parse_route("L0H0:*->a"),
               R.label_knockout({"labels": ["routed(*->a)"], "kind": "self", "layer": 0,
                                 "head": 0})):
        cut = R.target_cut(prep, ko)
        assert torch.equal(cut.any(-1), star[:, :cut.shape[1]])
    every = R.target_cut(prep, R.parse_route("L0H0:->a")).any(-1)
    assert (every & ~star[:, :every.shape[1]]).any()
    ko = R.parse_route("L0H0:*->a")
    assert R._queries(ko, [["a", "x"]]) is None and R._queries(ko, [["*", "a"]]) == ("*",)


def test_label_knockout_checks_the_first_label_as_the_taxonomy_names_it():
    """Hand-written head rows: routed(Q->K) (either arrow) cuts K from Q, vertical(t) the group
    t (as a fine role where t is no group under the grouping), sharp_diagonal(d) the offset d,
    blurred_diagonal its band centre rounded to the nearest offset; other labels: no check."""
    head = {"kind": "self", "layer": 1, "head": 2}
    groups = {"a", "b", "c", "x", "=", "D_value"}

    def ko(label, band_centre=0.0):
        return R.label_knockout({"labels": [label, "broad"], "band_centre": band_centre, **head},
                                groups=groups)

    assert ko("routed(D_value\u2192b,c)") == R.HeadKnockout("self", 1, 2, ("D_value",),
                                                             ("b", "c"))
    assert ko("routed(->x)") == R.HeadKnockout("self", 1, 2, keys=("x",))
    assert ko("vertical(=)") == R.HeadKnockout("self", 1, 2, token="=")
    assert ko("vertical(b_digit)") == R.HeadKnockout("self", 1, 2, token="b_digit",
                                                     grouping="fine")
    assert ko("sharp_diagonal(2)") == R.HeadKnockout("self", 1, 2, offset=2)
    assert ko("blurred_diagonal", band_centre=1.7).offset == 2
    assert ko("blurred_diagonal", band_centre=1.2).offset == 1
    assert ko("heterogeneous") is None and ko("broad") is None


def test_verify_heads_supports_a_label_only_when_interval_and_p_value_agree(
        tiny_checkpoints, monkeypatch):
    """The documented rule (ci_lo > 0 and p <= 0.05) on effects planted by hand in the
    knockout table (`ablate_route` stubbed): interval alone, p-value alone, both, and the
    boundaries (ci_lo = 0 is no support, p = 0.05 is); a route from one solution field is
    measured on that field's loss."""
    import pandas as pd

    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    labels = ["routed(D_value->b)", "vertical(=)", "sharp_diagonal(1)", "blurred_diagonal",
              "sharp_diagonal(2)", "heterogeneous"]
    planted = {  # spec -> (measure, ci_lo, p)
        "L0H0:D_value->b": ("loss:D_value", 0.10, 0.20),
        "L0H1:token==": ("answer_loss", -0.10, 0.01),
        "L0H2:offset=1": ("answer_loss", 0.20, 0.01),
        "L0H3:offset=0": ("answer_loss", 0.00, 0.01),
        "L1H0:offset=2": ("answer_loss", 0.05, 0.05)}
    asked = []

    def fake(bridge, task, examples, kos, *args, **kwargs):
        asked.extend(k.spec for k in kos)
        rows = []
        for k in kos:
            measure, lo, p = planted[k.spec]
            for m in {measure, "answer_loss"}:
                rows.append({"knockout": k.spec, "measure": m, "effect": lo + 0.1,
                             "ci_lo": lo if m == measure else -1.0, "ci_hi": lo + 0.2,
                             "p": p if m == measure else 1.0, "target_mass": 0.3,
                             "control_mass": 0.3})
        return R.RouteResult(pd.DataFrame(rows))

    monkeypatch.setattr(R, "ablate_route", fake)
    table = pd.DataFrame([{"kind": "self", "layer": l, "head": h, "labels": [lab],
                           "band_centre": 0.4} for (l, h), lab in
                          zip([(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)], labels)])
    out = R.verify_heads(ckpt.bridge(), ckpt.task, ckpt.task.generate(4, seed=0), table)
    assert asked == list(planted)
    assert list(out.knockout[:5]) == list(planted) and pd.isna(out.knockout[5])
    assert list(out.measure[:5]) == [m for m, _, _ in planted.values()]
    assert list(out.supported) == [False, False, True, False, True, None]
    assert list(out.ci_lo[:5]) == [lo for _, lo, _ in planted.values()]


def test_unknown_groups_and_heads_name_the_valid_ones(model):
    ckpt, bridge = model
    ex = ckpt.task.generate(4, seed=0)
    p = "" if ckpt.arch == "decoder" else "cross."
    with pytest.raises(InterpError, match=r"group 'bb'.*key groups are: .*\bc\b") as e:
        R.ablate_route(bridge, ckpt.task, ex, [f"{p}L0H0:D_value->bb"], n_controls=0)
    assert "\n" not in str(e.value)
    with pytest.raises(InterpError, match="heads 0-3"):
        R.ablate_route(bridge, ckpt.task, ex, [f"{p}L0H9:D_value->b"], n_controls=0)


# ---- a planted route -------------------------------------------------------------------

V = 28          # CharCodec's vocabulary; the planted model's head is 32 wide
STRENGTH = 12.0


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny decoder (2 layers, 2 heads of width 32) whose answer at `Dexpr_b` queries reads
    the tokens of field `b` through head 0 of layer 1, planted with permanent hooks:

    - the head's pattern at those rows puts 0.35 on the keys of b, 0.35 on the x keys (a
      decoy as heavy as the route, so mass-matched controls exist) and 0.3 on all others;
    - its values are the one-hot token ids, so its output `z` is the distribution of the
      tokens it reads (after any knockout);
    - the logits at those rows get STRENGTH * z: reading b's digits helps predict the next
      digit of `Dexpr_b` (a copy of b), reading anything else does not."""
    from interp.models import build_model, save_checkpoint
    from interp.models.config import ModelConfig
    from interp.tasks import get_task

    task = get_task("quadratic", "small")
    cfg = ModelConfig(arch="decoder", n_layers=2, d_model=64, n_heads=2, d_ff=64, n_ctx=128)
    path = tmp_path_factory.mktemp("planted") / "model"
    save_checkpoint(build_model(cfg, seed=1), path, {"task": task.describe(),
                                                     "model": cfg.to_dict(),
                                                     "arch": "decoder", "metrics": {}})
    bridge = load_checkpoint(path).bridge()
    examples = task.generate(40, seed=7)
    prep = A.prepare(bridge, task, examples)
    groups = {tuple(prep.sides["seq"].ids[i, :int(n)].tolist()): [R.group_role(r) for r in roles]
              for i, (n, roles) in enumerate(zip(prep.sides["seq"].lengths,
                                                 prep.sides["seq"].roles))}
    state = {}

    def ids_hook(t_all, hook):
        # a stacked pass repeats one batch of examples: keep that batch (the shortest period)
        n = len(t_all)
        t = t_all[:next(p for p in range(1, n + 1)
                        if n % p == 0 and torch.equal(t_all, t_all[:p].repeat(n // p, 1)))]
        rows = []
        for r in t.tolist():
            key = next(k for k in groups if tuple(r[:len(k)]) == k)
            rows.append(groups[key] + [""] * (len(r) - len(key)))
        state["ids"] = t
        state.update({g: torch.tensor([[x == g for x in row] for row in rows])
                      for g in ("Dexpr_b", "b", "x")})
        return t_all

    def rows(name, n):
        """The state of the last batch of examples that ran from the embeddings, tiled to n
        rows (every stacked pass, from the embeddings or from a later layer, repeats one
        batch of examples)."""
        x = state[name]
        return x.repeat(n // x.shape[0], *[1] * (x.dim() - 1))

    def pattern_hook(p, hook):
        w = p.shape[-1]
        tril = torch.ones(w, w, dtype=torch.bool).tril()
        b, x = (rows(g, len(p))[:, None, :] & tril for g in ("b", "x"))    # [rows, Q, K]
        rest = tril & ~b & ~x
        share = lambda m: m / m.sum(-1, keepdim=True).clamp_min(1)      # noqa: E731
        row = 0.35 * share(b) + 0.35 * share(x) + 0.3 * share(rest)
        p = p.clone()
        p[:, 0] = torch.where(rows("Dexpr_b", len(p))[:, :, None], row.to(p.dtype), p[:, 0])
        return p

    def v_hook(v, hook):
        v = v.clone()
        v[:, :, 0] = 0
        v[:, :, 0, :V] = torch.nn.functional.one_hot(rows("ids", len(v)), V).to(v.dtype)
        return v

    def z_hook(z, hook):
        state["z"] = z[:, :, 0, :V]
        return z

    def logit_hook(logits, hook):
        q = rows("Dexpr_b", len(logits))[:, :, None].to(logits.dtype)
        return logits + STRENGTH * state["z"] * q

    for name, fn in [("embed.hook_in", ids_hook),
                     (hook_name(bridge, "self", 1, "hook_pattern"), pattern_hook),
                     (hook_name(bridge, "self", 1, "hook_v"), v_hook),
                     (hook_name(bridge, "self", 1, "hook_z"), z_hook),
                     ("unembed.hook_out", logit_hook)]:
        bridge.add_hook(name, fn, is_permanent=True)
    yield bridge, task, examples
    bridge.reset_hooks(including_permanent=True)


def test_a_planted_route_is_confirmed_and_a_random_route_is_not(planted):
    bridge, task, examples = planted
    res = R.ablate_route(bridge, task, examples, ["L1H0:Dexpr_b->b", "L1H0:x1->a"],
                         n_controls=19, seed=0, batch_size=20, max_rows=200)
    s = res.frame().set_index(["knockout", "measure"])
    hit = s.loc[("L1H0:Dexpr_b->b", "loss:Dexpr_b")]
    assert hit.effect > 0.5 and hit.ci_lo > 0 and hit.p <= 0.05
    assert s.loc[("L1H0:Dexpr_b->b", "answer_loss")].ci_lo > 0
    # the planted rows put 0.35 on b; matched controls cut keys of about the same mass
    assert hit.target_mass == pytest.approx(0.35, abs=1e-4)
    assert abs(hit.control_mass - hit.target_mass) < 0.05
    miss = s.loc[("L1H0:x1->a", "answer_loss")]
    assert not (miss.ci_lo > 0 and miss.p <= 0.05)
    assert abs(miss.effect) < 0.1 * hit.effect


def test_verify_heads_checks_first_labels_and_skips_the_rest(planted):
    import pandas as pd

    bridge, task, examples = planted
    table = pd.DataFrame([
        {"kind": "self", "layer": 1, "head": 0, "labels": ["routed(Dexpr_b\u2192b)", "broad"],
         "band_centre": 0.0},
        {"kind": "self", "layer": 1, "head": 1, "labels": ["heterogeneous"], "band_centre": 0},
        {"kind": "self", "layer": 0, "head": 1, "labels": ["blurred_diagonal"],
         "band_centre": 1.2}])
    # the planted hooks know only these 40 examples: no donors drawn (reads=False)
    out = R.verify_heads(bridge, task, examples, table, n_controls=19, reads=False)
    assert list(out.knockout[[0, 2]]) == ["L1H0:Dexpr_b->b", "L0H1:offset=1"]
    assert out.measure[0] == "loss:Dexpr_b" and out.supported[0] is True
    assert out.supported[1] is None and pd.isna(out.knockout[1]) and np.isnan(out.effect[1])
    assert out.answer_loss_effect[0] > 0


def test_cli_route_writes_outputs_and_bad_specs_are_one_line(tiny_checkpoints, tmp_path,
                                                            capsys):
    from circuits.ablate import main

    ck = str(tiny_checkpoints["decoder"])
    out = tmp_path / "r"
    rc = main([ck, "--route", "L1H0:D_value->b,c;L0H1:offset=1", "--route", "L1H3:token==",
               "--n", "6", "--controls", "2", "--out", str(out), "--json",
               str(tmp_path / "r.json"), "--quiet"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "L1H0:D_value->b,c" in printed.out and "effect" in printed.out
    for f in ("routes.csv", "routes.json", "report.html"):
        assert (out / f).is_file()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["meta"]["knockouts"] == ["L1H0:D_value->b,c", "L0H1:offset=1", "L1H3:token=="]
    page = (out / "report.html").read_text()
    assert "Plotly.newPlot" in page and "D_value-&gt;b,c" in page    # escaped
    for argv, needles in [(["--route", "L1H0:D_value->zz"], ["group 'zz'"]),
                          (["--route", "L1H0"], ["cannot read"]),
                          (["--route", "L1H0:a->b", "--tokens", "x"], ["--route", "--tokens"]),
                          ([], ["--route", "--tokens"]),
                          (["--route", "L1H0:a->b", "--layers", "1"], ["--layers"]),
                          (["--route", "L1H0:a->b;;"], ["empty route"]),
                          (["--route", "L1H9:a->b"], ["heads 0-3"])]:
        rc = main([ck, "--n", "3", "--controls", "0", *argv])
        one_line(rc, capsys.readouterr().err, *needles)


def naive_route_greedy(bridge, prep, ko, cut, i):
    """Decode example i from its prompt, one full forward per token, the route cut in its
    head: a position keeps the cut row of the solution position it stands at."""
    from interp.tasks.tokenizer import CharCodec

    codec = CharCodec()
    ex = prep.examples[i]
    if prep.arch == "decoder":
        seq = [codec.bos] + codec.encode(ex.src) + [codec.sep]
        src = None
    else:
        src = torch.tensor([codec.encode(ex.src) + [codec.eos]])
        seq = [codec.pad]
    start = len(seq)
    limit = start + len(ex.tgt) + A.EXTRA_TOKENS
    while seq[-1] != codec.eos and len(seq) < limit:
        cur = torch.tensor([seq])
        ids = {"seq": cur} if src is None else {"src": src, "tgt": cur}
        valid = {k: torch.ones_like(v, dtype=torch.bool) for k, v in ids.items()}
        k = R.KINDS[ko.kind]
        wq, wk = ids[k.query_side].shape[1], ids[k.key_side].shape[1]
        c = torch.zeros(1, wq, wk, dtype=torch.bool)
        part = cut[i:i + 1, :wq, :wk]
        c[:, :part.shape[1], :part.shape[2]] = part
        hooks = head_hooks(bridge, prep.arch, {(ko.kind, ko.layer): (torch.tensor([ko.head]), c)})
        logits = A.forward(bridge, prep.arch, ids, valid, hooks)
        seq.append(int(logits[0, -1].argmax()))
    return codec.decode(seq[start:])


def test_decoding_under_a_route_equals_naive_greedy_decoding(model):
    ckpt, bridge = model
    ex = ckpt.task.generate(2, seed=2)
    spec = "L1H1:x1->b,=" if ckpt.arch == "decoder" else "dec.L1H1:x1->D_value,="
    res = R.ablate_route(bridge, ckpt.task, ex, [spec], n_controls=0, decode=True)
    prep = A.prepare(bridge, ckpt.task, ex)
    ko = R.parse_route(spec, prep.arch)
    cut = R.target_cut(prep, ko)
    assert cut.any()
    naive = [naive_route_greedy(bridge, prep, ko, cut, i) for i in range(len(ex))]
    assert res.decoded[spec]["target"] == naive
    s = res.frame().set_index("measure")
    checks = [float(ckpt.task.check(e.src, o).ok) for e, o in zip(ex, naive)]
    assert s.loc["decode:exact", "target"] == pytest.approx(np.mean(checks))
