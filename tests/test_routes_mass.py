"""Equal-mass route controls, the value path patch (reads K) and untestable verdicts
(issue #22), each against an oracle that does not share the code under test: planted
patterns checked by loops, a planted model whose head matters only by the mass it loses, HF's
own attention run on hand-replaced values, and the p-value floor 1/(n+1)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from circuits import ablation as A
from circuits.ablation import masscut as M
from circuits.ablation import reads as RD
from circuits.ablation import routes as R
from interp.hooks import hook_name
from interp.models import load_checkpoint


# ---- the equal-mass rule on planted patterns -------------------------------------------

def planted_patterns():
    """3 heads, causal rows of width 10. The target: key 1 of head 0 from queries 6..9.
    Example 0: head 0 spreads its other mass on many light keys (same head can match).
    Example 1: head 0 puts 0.9 on the target (others hold 0.1 < 0.8 * 0.9: other heads).
    Example 2: target 0.2, one other key of 0.4 (twice too heavy) and light ones holding 0.4
    (same head, never the heavy key).
    Example 3: target 0.3, one other key of 0.69 and light ones holding 0.01: enough mass,
    but no set of keys in the band (other heads)."""
    n, h, w = 4, 3, 10
    ok = torch.ones(n, w, w, dtype=torch.bool).tril()
    cut = torch.zeros(n, w, w, dtype=torch.bool)
    cut[:, 6:, 1] = True
    pat = torch.zeros(n, h, w, w)
    for q in range(w):
        pat[:, :, q, : q + 1] = 1.0 / (q + 1)
    for q in range(6, w):
        pat[0, 0, q, : q + 1] = 0.6 / q
        pat[0, 0, q, 1] = 0.4
        pat[1, 0, q, : q + 1] = 0.1 / q
        pat[1, 0, q, 1] = 0.9
        pat[2, 0, q, : q + 1] = 0.4 / (q - 1)
        pat[2, 0, q, 1], pat[2, 0, q, 3] = 0.2, 0.4
        pat[3, 0, q, : q + 1] = 0.01 / (q - 1)
        pat[3, 0, q, 1], pat[3, 0, q, 3] = 0.3, 0.69
    return cut, ok, pat


def band_reachable(masses, t) -> bool:
    """Whether some set of these key masses sums into [LOW t, HIGH t] (enumerated)."""
    from itertools import combinations

    return any(M.LOW * t <= sum(c) <= M.HIGH * t for r in range(1, len(masses) + 1)
               for c in combinations(masses, r))


def test_equal_mass_controls_match_the_target_mass_recomputed_by_hand():
    cut, ok, pat = planted_patterns()
    mc = M.equal_mass_controls(cut, ok, pat, 0, 9, np.random.default_rng(1))
    assert mc.cuts.shape == (9, 4, 3, 10, 10)
    t_all, c_all, other, ratios = [], [], [], []
    for c in range(9):
        for i in range(4):
            for q in range(10):
                if not bool(cut[i, q].any()):
                    assert not bool(mc.cuts[c, i, :, q].any())       # other rows untouched
                    continue
                t = sum(float(pat[i, 0, q, k]) for k in range(10) if cut[i, q, k])
                got = 0.0
                for h in range(3):
                    left = 0.0
                    for k in range(10):
                        if mc.cuts[c, i, h, q, k]:
                            assert ok[i, q, k] and not cut[i, q, k]   # allowed, never the target
                            got += float(pat[i, h, q, k])
                        else:
                            left += float(pat[i, h, q, k])
                    assert left >= M.LEFT - 1e-9                      # every row stays alive
                heads = {h for h in range(3) if bool(mc.cuts[c, i, h, q].any())}
                # the fallback exactly where no set of the head's other keys is in the band
                pool = [float(pat[i, 0, q, k]) for k in range(q + 1) if not cut[i, q, k]]
                if band_reachable(pool, t):
                    assert heads == {0}
                else:
                    assert 0 not in heads and heads
                assert M.LOW <= got / t <= M.HIGH                     # the stated tolerance
                t_all.append(t)
                c_all.append(got)
                other.append(0 not in heads)
                ratios.append(got / t)
    assert other.count(True) == 9 * 8                                 # examples 1 and 3
    assert mc.target_mass == pytest.approx(np.mean(t_all[:16]))       # rows, once per control
    assert mc.control_mass == pytest.approx(np.mean(c_all))
    assert mc.other_heads == pytest.approx(1 / 2)
    assert mc.unmatched == 0 and mc.ratio_min == pytest.approx(min(ratios))
    assert mc.rule == "mixed (50% other-heads)"
    # example 2: the 0.4 key alone is twice the target; light keys match instead
    assert not bool(mc.cuts[:, 2, 0, 6:, 3].any())
    again = M.equal_mass_controls(cut, ok, pat, 0, 9, np.random.default_rng(1))
    assert torch.equal(again.cuts, mc.cuts)                           # seeded


def test_without_the_fallback_a_heavy_target_cannot_be_matched():
    cut, ok, pat = planted_patterns()
    same = M.equal_mass_controls(cut, ok, pat, 0, 4, np.random.default_rng(0),
                                 other_heads=False)
    assert not bool(same.cuts[:, :, 1:].any())                       # head 0 only
    assert same.other_heads == 0 and same.rule == "same-head"
    assert same.unmatched == pytest.approx(1 / 2)                    # examples 1 and 3
    assert same.ratio_min < 0.2


# ---- a planted head that matters only by the mass it loses -------------------------------

WRONG = 3          # the token whose logit grows with the damage
STRENGTH = 4.0


@pytest.fixture(scope="module")
def mass_only(tmp_path_factory):
    """A tiny decoder whose head L1H0, at the `Dexpr_b` queries, puts 0.35 on the keys of b
    and the rest evenly on the others; its value at position k is the one-hot of k, so its
    output there is the attention row as the model uses it (after any knockout). From it the
    planted readout recovers the mass m a cut removed (every key that is left grows by
    1 / (1 - m)), and the logits of those rows grow a wrong token by STRENGTH * m: the damage
    depends on how much attention is cut, not on which keys. Equal-mass controls then hurt
    as much as the route; controls with as many keys (light ones) do not."""
    from interp.models import build_model, save_checkpoint
    from interp.models.config import ModelConfig
    from interp.tasks import get_task

    task = get_task("quadratic", "small")
    cfg = ModelConfig(arch="decoder", n_layers=2, d_model=256, n_heads=2, d_ff=64, n_ctx=128)
    path = tmp_path_factory.mktemp("massonly") / "model"
    save_checkpoint(build_model(cfg, seed=1), path, {"task": task.describe(),
                                                     "model": cfg.to_dict(),
                                                     "arch": "decoder", "metrics": {}})
    bridge = load_checkpoint(path).bridge()
    examples = task.generate(30, seed=5, heldout=True, unique=True)
    prep = A.prepare(bridge, task, examples)
    groups = {tuple(prep.sides["seq"].ids[i, :int(n)].tolist()): [R.group_role(r) for r in roles]
              for i, (n, roles) in enumerate(zip(prep.sides["seq"].lengths,
                                                 prep.sides["seq"].roles))}
    state = {}

    def ids_hook(t_all, hook):
        n = len(t_all)
        t = t_all[:next(p for p in range(1, n + 1)
                        if n % p == 0 and torch.equal(t_all, t_all[:p].repeat(n // p, 1)))]
        rows = []
        for r in t.tolist():
            key = next(k for k in groups if tuple(r[:len(k)]) == k)
            rows.append(groups[key] + [""] * (len(r) - len(key)))
        state.update({g: torch.tensor([[x == g for x in row] for row in rows])
                      for g in ("Dexpr_b", "b")})
        return t_all

    def rows(name, n):
        x = state[name]
        return x.repeat(n // x.shape[0], *[1] * (x.dim() - 1))

    def pattern_hook(p, hook):
        w = p.shape[-1]
        tril = torch.ones(w, w, dtype=torch.bool).tril()
        b = rows("b", len(p))[:, None, :] & tril
        rest = tril & ~b
        share = lambda m: m / m.sum(-1, keepdim=True).clamp_min(1)      # noqa: E731
        row = 0.35 * share(b) + 0.65 * share(rest)
        state["A"] = row                                 # the planted clean rows
        p = p.clone()
        p[:, 0] = torch.where(rows("Dexpr_b", len(p))[:, :, None], row.to(p.dtype), p[:, 0])
        return p

    def v_hook(v, hook):
        v = v.clone()
        w = v.shape[1]
        v[:, :, 0] = 0
        v[:, :, 0, :w] = torch.eye(w, dtype=v.dtype)
        return v

    def z_hook(z, hook):
        w = z.shape[1]
        used, clean = z[:, :, 0, :w].float(), state["A"].float()          # [rows, Q, K]
        ratio = torch.where((used > 1e-9) & (clean > 1e-9), clean / used.clamp_min(1e-9),
                            torch.full_like(used, float("inf")))
        state["m"] = (1 - ratio.min(-1).values).clamp(0, 1).nan_to_num(0)  # mass cut per row
        return z

    def logit_hook(logits, hook):
        q = rows("Dexpr_b", len(logits)).to(logits.dtype)
        logits = logits.clone()
        logits[..., WRONG] += STRENGTH * state["m"] * q
        return logits

    for name, fn in [("embed.hook_in", ids_hook),
                     (hook_name(bridge, "self", 1, "hook_pattern"), pattern_hook),
                     (hook_name(bridge, "self", 1, "hook_v"), v_hook),
                     (hook_name(bridge, "self", 1, "hook_z"), z_hook),
                     ("unembed.hook_out", logit_hook)]:
        bridge.add_hook(name, fn, is_permanent=True)
    yield bridge, task, examples
    bridge.reset_hooks(including_permanent=True)


def test_a_head_that_matters_only_by_mass_is_not_confirmed_by_equal_mass_controls(mass_only):
    bridge, task, examples = mass_only
    spec = "L1H0:Dexpr_b->b"
    kw = dict(n_controls=19, seed=0, batch_size=30, max_rows=300)
    new = R.ablate_route(bridge, task, examples, [spec], **kw).frame()
    old = R.ablate_route(bridge, task, examples, [spec], controls="count", **kw).frame()
    n, o = (f.set_index("measure").loc["loss:Dexpr_b"] for f in (new, old))
    assert n.target_damage > 0.05                               # the knockout does hurt
    # the old rule: as many (light) keys, little mass, little damage: "confirmed"
    assert o.verdict == "confirmed" and o.mass_ratio < 0.5
    # equal mass: the controls hurt as much as the route; no confirmation
    assert n.verdict == "not confirmed"
    assert n.control_rule == "same-head" and 0.8 <= n.mass_ratio <= 1.25
    assert abs(n.effect) < 0.25 * n.target_damage
    assert n.target_mass == pytest.approx(0.35, abs=1e-4)


# ---- the value path patch against HF run on hand-replaced values ------------------------

def test_value_path_patch_equals_hf_with_the_values_replaced_by_hand(tiny_checkpoints):
    """Route `->b` in L1H2 (every query reads b): the path patch is then HF's own forward with
    head 2's value vectors at b's positions taken from the donor's run (the value slice of
    `c_attn`'s output replaced by hand), nothing else changed. Compared as each example's
    teacher-forced answer loss, computed here from HF's logits."""
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    hf = load_checkpoint(tiny_checkpoints["decoder"]).model     # HF alone, never wrapped
    d_model = hf.config.n_embd
    dh = d_model // hf.config.n_head
    sl = slice(2 * d_model + 2 * dh, 2 * d_model + 3 * dh)       # values of head 2
    with torch.no_grad():                  # larger values: a patch that shows in the loss
        for m in (hf, ckpt.model):
            m.transformer.h[1].attn.c_attn.weight[:, sl] *= 30
            m.transformer.h[1].attn.c_attn.bias[sl] *= 30
    bridge, task = ckpt.bridge(), ckpt.task
    examples = task.generate(24, seed=2)
    prep = A.prepare(bridge, task, examples)
    ko = R.parse_route("L1H2:->b")
    cut = R.target_cut(prep, ko)
    donors, has = RD.find_donors(bridge, task, prep, "seq", cut.any(1), seed=0, pool=400)
    assert has.sum() >= 4
    from interp.tasks.tokenizer import CharCodec

    itos = CharCodec().itos
    for i in torch.nonzero(has).flatten().tolist():              # same layout, K differs
        assert bool((donors["seq"][i][cut[i].any(0)] != prep.sides["seq"].ids[i][
            cut[i].any(0)]).any())
        # the layout read off the tokens: a digit where the example has a digit, the same
        # literal everywhere else (padding included)
        for a, b in zip(donors["seq"][i].tolist(), prep.sides["seq"].ids[i].tolist()):
            assert itos[a].isdigit() == itos[b].isdigit()
            assert itos[a].isdigit() or a == b
    vd = {("self", 1): RD.donor_values(bridge, prep, donors, "self", 1, batch_size=8)}
    got = R.run_reads(bridge, prep, [(ko, cut)], vd, batch_size=8, max_rows=16)[0].loss

    valid = prep.sides["seq"].valid.long()
    ids = prep.sides["seq"].ids
    attn = hf.transformer.h[1].attn
    store = {}

    def keep(module, args, out):
        store["qkv"] = out.detach().clone()

    def replace(module, args, out):
        out = out.clone()
        kpos = cut.any(1)                                          # [N, W]
        out[..., sl] = torch.where(kpos[:, : out.shape[1], None], store["qkv"][..., sl],
                                   out[..., sl])
        return out

    with torch.no_grad():
        h = attn.c_attn.register_forward_hook(keep)
        hf(input_ids=donors["seq"], attention_mask=valid)
        h.remove()
        assert store["qkv"].shape[:2] == ids.shape                # HF's own c_attn ran
        h = attn.c_attn.register_forward_hook(replace)
        logits = hf(input_ids=ids, attention_mask=valid).logits.float()
        h.remove()
    lab = prep.labels
    keepm = lab != -100
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), lab.clamp_min(0),
                                           reduction="none")
    want = (ce * keepm).sum(1) / keepm.sum(1)
    assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()
    clean = R.run_cuts(bridge, prep, [(ko, torch.zeros_like(cut))], batch_size=8)[0].loss
    assert (got - clean)[has].abs().max() > 1e-3                # the patch did something


def test_value_path_patch_touches_only_the_selected_query_rows(tiny_checkpoints):
    """A route from one query group: the head's output changes in those rows only, by
    sum_k A[q, k] (v_donor[k] - v[k]) computed here by loops from captured tensors."""
    from interp.hooks import capture, run

    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    bridge, task = ckpt.bridge(), ckpt.task
    prep = A.prepare(bridge, task, task.generate(6, seed=4))
    ko = R.parse_route("L1H1:D_value->b,c")
    cut = R.target_cut(prep, ko)
    donors, _ = RD.find_donors(bridge, task, prep, "seq", cut.any(1), seed=0, pool=400)
    names = [hook_name(bridge, "self", 1, x) for x in ("hook_pattern", "hook_v", "hook_z")]
    ids, mask = prep.sides["seq"].ids, prep.sides["seq"].valid.long()
    c = capture(bridge, ids, names=names, attention_mask=mask)
    d = capture(bridge, donors["seq"], names=names[1:2], attention_mask=mask)
    sel = torch.zeros(prep.n, 4, *cut.shape[1:], dtype=torch.bool)
    sel[:, 1] = cut
    delta = RD.z_delta(sel, c[names[0]].float(), c[names[1]].float(), d[names[1]].float())
    seen = {}
    run(bridge, ids, attention_mask=mask,
        hooks=[(names[2], RD.z_hook(delta)),
               (names[2], lambda z, hook: seen.update(z=z.detach().clone()))])
    z0, z1 = c[names[2]], seen["z"]
    A_, V, Vd = c[names[0]], c[names[1]], d[names[1]]
    for i in range(prep.n):
        for q in range(ids.shape[1]):
            for h in range(4):
                want = z0[i, q, h].clone()
                if h == 1 and bool(cut[i, q].any()):
                    for k in range(ids.shape[1]):
                        if cut[i, q, k]:
                            want += A_[i, h, q, k] * (Vd[i, k, h] - V[i, k, h])
                assert torch.allclose(z1[i, q, h], want, atol=1e-5)


# ---- too few controls: untestable, never a silent NOT CONFIRMED --------------------------

def test_ten_controls_give_untestable_in_the_frame_and_in_verify(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    bridge, task = ckpt.bridge(), ckpt.task
    ex = task.generate(6, seed=0)
    res = R.ablate_route(bridge, task, ex, ["L1H0:D_value->b,c"], n_controls=10)
    assert set(res.frame().verdict) == {"untestable"}
    assert res.frame().p.min() >= 1 / 11 - 1e-12                  # the floor it cannot pass
    assert "untestable at 10 controls" in res.meta["note"]
    assert "1/11" in res.meta["note"]
    table = pd.DataFrame([{"kind": "self", "layer": 1, "head": 0,
                           "labels": ["routed(D_value->b,c)"], "band_centre": 0.0}])
    v = R.verify_heads(bridge, task, ex, table, n_controls=10, reads=False)
    assert v.verdict[0] == "untestable" and v.supported[0] is None
    v19 = R.verify_heads(bridge, task, ex, table, n_controls=19, reads=False)
    assert v19.verdict[0] in ("confirmed", "not confirmed")
    assert bool(v19.supported[0]) == (v19.verdict[0] == "confirmed")
    # the report of a merged table: the check column and the page say why
    from interp.classify_heads import merge_verification
    from interp.viz.reports import classify as report

    merged = merge_verification(table.assign(label="routed(D_value->b,c)", main_score=0.5,
                                             reads="", vertical_roles=[[]]), v)
    merged.attrs["verify"] = {"n": 6, "distinct": 6, "controls": 10, "note": res.meta["note"]}
    text = report.text(merged)
    assert "untestable at 10 controls" in text and "NOT CONFIRMED" not in text
    assert "1/11" in text


def test_classify_heads_prints_untestable_at_ten_controls(tiny_checkpoints, tmp_path, capsys):
    from interp.classify_heads import _main

    out = tmp_path / "v"
    assert _main([str(tiny_checkpoints["decoder"]), "--n", "6", "--out", str(out), "--quiet",
                  "--verify", "--verify-n", "6", "--controls", "10", "--no-report"]) == 0
    printed = capsys.readouterr().out
    assert "untestable at 10 controls" in printed and "NOT CONFIRMED" not in printed
    assert "6 held-out examples (6 distinct equations)" in printed
    table = pd.read_csv(out / "heads.csv")
    checked = table.verify_knockout.notna()          # (this random model may have none)
    assert (table.loc[checked, "verify_verdict"] == "untestable").all()
    assert table.loc[checked, "verified"].isna().all()
    for col in ("verify_mass_ratio", "verify_control_rule", "verify_reads_effect",
                "verify_reads_verdict", "verify_reads_n"):
        assert col in table.columns
    rows = json.loads((out / "heads.json").read_text())
    assert all(r["verify_verdict"] == "untestable" for r in rows if r["verify_knockout"])


def test_verify_draws_held_out_distinct_equations(tiny_checkpoints, tmp_path, monkeypatch):
    from interp.classify_heads import _main
    from interp.tasks.base import is_heldout

    seen = {}
    real = R.verify_heads

    def spy(bridge, task, examples, table, **kw):
        seen["examples"] = list(examples)
        return real(bridge, task, examples, table, **{**kw, "reads": False})

    monkeypatch.setattr(A, "verify_heads", spy)
    assert _main([str(tiny_checkpoints["decoder"]), "--n", "6", "--out", str(tmp_path / "o"),
                  "--quiet", "--verify", "--verify-n", "30", "--controls", "2",
                  "--no-report"]) == 0
    ex = seen["examples"]
    assert len(ex) == 30 and len({e.src for e in ex}) == 30
    assert all(is_heldout(e.src) for e in ex)


def test_small_effects_print_with_significant_digits():
    from interp.viz.reports.routes import effect_text, verdict_text

    assert effect_text(0.00031, 0.00012, 0.00054) == "+0.00031 [+0.00012, +0.00054]"
    assert effect_text(0.346, 0.310, 0.384) == "+0.346 [+0.310, +0.384]"
    assert effect_text(0.0031, -0.0002, 0.0064) == "+0.0031 [-0.0002, +0.0064]"
    assert verdict_text("untestable", 10) == "untestable at 10 controls"
    assert verdict_text("not confirmed", 20) == "NOT confirmed"


def test_ablate_route_cli_prints_untestable_masses_and_reads(tiny_checkpoints, tmp_path, capsys):
    from circuits.ablate import main

    out = tmp_path / "r"
    rc = main([str(tiny_checkpoints["decoder"]), "--route", "L1H0:D_value->b,c", "--n", "6",
               "--controls", "10", "--reads", "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "untestable at 10 controls" in printed.out and "NOT" not in printed.out
    assert "equal-mass controls" in printed.out and "ratio" in printed.out
    assert "reads K" in printed.out
    summary = pd.read_csv(out / "routes.csv")
    assert (summary.verdict == "untestable").all()
    assert {"mass_ratio", "control_rule", "target_mass", "control_mass"} <= set(summary.columns)
    reads = pd.read_csv(out / "reads.csv")
    assert set(reads.knockout) == {"L1H0:D_value->b,c"} and "donors" in reads.columns
    data = json.loads((out / "routes.json").read_text())
    assert "untestable at 10 controls" in data["meta"]["note"] and "reads" in data


def test_the_taxonomy_reads_distinct_equations(tiny_checkpoints, tmp_path, monkeypatch):
    """The classification's own examples are distinct too (#22: a repeated equation is no
    independent observation): 300 draws from the small preset, where draws with
    replacement repeat some."""
    import interp.attention.taxonomy as T
    import interp.classify_heads as C

    seen = {}
    real = T.head_taxonomy

    def spy(bridge, task, examples, *args, **kw):
        seen["examples"] = list(examples)
        return real(bridge, task, examples, *args, **kw)

    monkeypatch.setattr(T, "head_taxonomy", spy)
    assert C._main([str(tiny_checkpoints["decoder"]), "--n", "300", "--out",
                    str(tmp_path / "o"), "--quiet", "--no-report", "--format", "csv"]) == 0
    ex = seen["examples"]
    assert len(ex) == 300 and len({e.src for e in ex}) == 300


def test_the_donor_pool_is_prepared_once_per_seed_and_equals_a_fresh_one(tiny_checkpoints):
    """The route checks reuse the generated donor pool; each seed's is the pool `prepare`
    gives for that seed's examples (the oracle: prepared afresh), and asking again returns the
    same prepared pool without preparing it again."""
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    bridge, task = ckpt.bridge(), ckpt.task
    for seed in (0, 1):
        got = RD._pool(bridge, task, 40, seed)
        fresh = A.prepare(bridge, task, task.generate(40, seed=seed + 10_000))
        assert [e.src for e in got.examples] == [e.src for e in fresh.examples]
        assert torch.equal(got.sides["seq"].ids, fresh.sides["seq"].ids)
        assert RD._pool(bridge, task, 40, seed) is got
    assert RD._pool(bridge, task, 40, 0).examples != RD._pool(bridge, task, 40, 1).examples
