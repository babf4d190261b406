"""The seed's protocol, measured: a model trained on a fixed split (`--data fixed`, above all
`--protocol seed`) is scored on that split's test rows, repeats of training equations
included as the seed counted them, and on equations it never trained on.

    res = seed_protocol(load_checkpoint("quadratic-seed"))
    print(format_protocol(res))

The split is regenerated from the recipe in the checkpoint (seed, rows, split), so nothing
but the checkpoint is needed. The first `eval_n` test rows chose the best checkpoint during
training; they are left out here. Each row's verdict is exact match of the whole output; the
overlap part says what share of test rows also occur in training, how each part scores, and
how much of the exact-match figure the repeats account for. Intervals resample distinct
equations (a cluster bootstrap: the rows of one equation move together), since a repeated
row is no independent observation.
"""

from __future__ import annotations

import numpy as np

from interp.errors import InterpError
from interp.metrics import char_accuracy, eval_examples, evaluate
from interp.stats import bootstrap_ci, distinct
from interp.tasks import overlap


def recipe_of(ckpt):
    """The TrainConfig stored in a checkpoint; InterpError when it has none or no fixed split."""
    from interp.training.recipe import TrainConfig

    rec = (ckpt.meta or {}).get("training", {}).get("recipe")
    if not rec:
        raise InterpError("this checkpoint records no training recipe, so its split cannot be "
                          "rebuilt; --protocol seed needs a model trained by interp.train")
    cfg = TrainConfig.from_dict(rec)
    if cfg.data != "fixed":
        raise InterpError(f"this model trained on fresh samples (--data {cfg.data}), so it has "
                          "no test split; --protocol seed needs a model trained with "
                          "--protocol seed or --data fixed")
    return cfg


def _exact_part(ok: np.ndarray, groups: list[str], chars: np.ndarray) -> dict:
    n = int(len(ok))
    if n == 0:     # None, not NaN: the JSON stays strict
        return {"n": 0, "distinct": 0, "exact_match": None, "exact_ci": [None, None],
                "char_accuracy": None}
    lo, hi = bootstrap_ci(ok.astype(float), groups=groups, seed=0)
    return {"n": n, "distinct": distinct(groups), "exact_match": float(ok.mean()),
            "exact_ci": [lo, hi], "char_accuracy": float(chars[:, 0].sum() / chars[:, 1].sum())}


def seed_protocol(ckpt, n: int | None = None, novel_n: int = 1000, seed: int = 12345,
                  batch_size: int = 256, progress: bool = False) -> dict:
    """Scores of `ckpt` on its own fixed split's test rows (at most `n`, after the rows that
    chose the checkpoint) and on `novel_n` distinct held-out equations (seed `seed`)."""
    from interp.training.recipe import fixed_split

    cfg = recipe_of(ckpt)
    task = ckpt.task
    train, test = fixed_split(cfg)
    chosen = min(cfg.eval_n, len(test))
    rows = test[chosen:]
    if not rows:
        raise InterpError(f"all {len(test)} test rows chose the checkpoint (--eval-n "
                          f"{cfg.eval_n}); nothing is left to score")
    if n is not None:
        if n > len(rows):
            raise InterpError(f"--n {n} is more than the {len(rows):,} test rows left after the "
                              f"{chosen} that chose the checkpoint; give --n {len(rows)} or less")
        rows = rows[:n]
    novel, dropped = _novel_set(task, train, novel_n, seed)
    n_ctx = ckpt.config.n_ctx
    metrics, outs = evaluate(ckpt.model, ckpt.arch, task, rows, n_ctx, batch_size, progress)
    ok = np.array([o == e.tgt for o, e in zip(outs, rows)])
    chars = np.array([char_accuracy(o, e.tgt) for o, e in zip(outs, rows)], dtype=float)
    seen = np.array(overlap(train, rows))
    src = [e.src for e in rows]
    cls = np.array([e.cls for e in rows])
    lo, hi = bootstrap_ci(ok.astype(float), groups=src, seed=0)
    metrics["exact_ci"] = [lo, hi]
    metrics["distinct"] = distinct(src)
    parts = {name: _exact_part(ok[m], [s for s, k in zip(src, m) if k], chars[m])
             for name, m in (("seen", seen), ("unseen", ~seen))}
    share_lo, share_hi = bootstrap_ci(seen.astype(float), groups=src, seed=1)
    per_class = {}
    for c in sorted(set(cls)):
        m = cls == c
        per_class[c] = {"rows": int(m.sum()), "seen_share": float(seen[m].mean()),
                        "exact_seen": float(ok[m & seen].mean()) if (m & seen).any() else None,
                        "exact_unseen": float(ok[m & ~seen].mean()) if (m & ~seen).any()
                        else None}
    exact = float(ok.mean())
    mix = task.default_mix
    reweighted = (sum(mix[c] * per_class[c]["exact_unseen"] for c in mix)
                  if all(c in per_class and per_class[c]["exact_unseen"] is not None
                         for c in mix) else None)
    result = {
        "split": {"rows": cfg.rows, "split": cfg.split, "seed": cfg.seed,
                  "train_rows": len(train), "test_rows": len(test), "chose_checkpoint": chosen,
                  "scored_rows": len(rows), "init_from": cfg.init_from},
        "test": metrics,
        "overlap": {"share": float(seen.mean()), "share_ci": [share_lo, share_hi],
                    "seen": parts["seen"], "unseen": parts["unseen"], "per_class": per_class,
                    # the part of the exact-match figure that rows seen in training supply
                    "exact_from_seen": float(ok[seen].sum() / ok.sum()) if ok.any() else None,
                    "exact": exact, "unseen_at_class_mix": reweighted},
    }
    if novel:
        nm, nouts = evaluate(ckpt.model, ckpt.arch, task, novel, n_ctx, batch_size, progress)
        nok = np.array([o == e.tgt for o, e in zip(nouts, novel)], dtype=float)
        nm["exact_ci"] = list(bootstrap_ci(nok, seed=0))
        nm["dropped_as_training_rows"] = dropped
        result["novel"] = nm
    return result


def _novel_set(task, train, n: int, seed: int):
    """`n` distinct held-out equations none of which is a training row, and how many drawn
    ones were dropped for being one (none when the run kept the held-out partition out)."""
    if not n:
        return [], 0
    try:
        drawn = eval_examples(task, n, seed, holdout=True, unique=True)
    except InterpError as e:
        raise InterpError(f"--novel-n {n}: {e}") from None
    seen = overlap(train, drawn)      # only a --no-holdout run can have trained on them
    return [e for e, s in zip(drawn, seen) if not s], sum(seen)


def _pct(x) -> str:
    return "   n/a" if x is None or x != x else f"{x:6.1%}"


def format_protocol(res: dict, title: str) -> str:
    from interp.evaluate import format_report

    sp, t, ov = res["split"], res["test"], res["overlap"]
    kind = ("the seed's protocol" if sp["split"] == "seed" else
            "its own split (distinct: no test equation is a training one)")
    lines = [format_report(t, f"{title}: {kind}, test rows {sp['chose_checkpoint'] + 1:,}"
                              f"-{sp['chose_checkpoint'] + sp['scored_rows']:,} of {sp['test_rows']:,}"
                              f" ({sp['rows']:,} rows, split {sp['split']}, seed {sp['seed']}; "
                              f"{t['distinct']:,} distinct equations)"),
             f"  exact match 95% interval (distinct equations resampled): "
             f"[{t['exact_ci'][0]:.1%}, {t['exact_ci'][1]:.1%}]",
             f"  test rows whose equation is also a training row: {ov['share']:.1%} "
             f"[{ov['share_ci'][0]:.1%}, {ov['share_ci'][1]:.1%}]"]
    if sp["split"] != "seed":
        lines.pop()
    for name in ("seen", "unseen") if sp["split"] == "seed" else ():
        p = ov[name]
        if p["n"]:
            lines.append(f"    {name:<6} n={p['n']:<6} exact {p['exact_match']:6.1%} "
                         f"[{p['exact_ci'][0]:.1%}, {p['exact_ci'][1]:.1%}]   char "
                         f"{p['char_accuracy']:6.1%}")
    for c, v in ov["per_class"].items() if sp["split"] == "seed" else ():
        lines.append(f"    {c:<6} rows={v['rows']:<6} seen {v['seen_share']:6.1%}   exact seen "
                     f"{_pct(v['exact_seen'])}   unseen {_pct(v['exact_unseen'])}")
    if sp["split"] == "seed":
        lines.append(f"  share of the exact matches that are training rows again: "
                     f"{_pct(ov['exact_from_seen']).strip()}; unseen rows at the class mix: "
                     f"{_pct(ov['unseen_at_class_mix']).strip()} exact")
    if sp.get("init_from"):
        lines.append(f"  (training rows are this stage's; it started from {sp['init_from']}, "
                     "whose own rows are not counted here)")
    if "novel" in res:
        nv = res["novel"]
        dropped = (f"; {nv['dropped_as_training_rows']} drawn ones left out as training rows"
                   if nv["dropped_as_training_rows"] else "")
        lines.append(format_report(nv, f"{title}: {nv['n']:,} distinct held-out equations, "
                                       f"never trained on{dropped}"))
        lines.append(f"  exact match 95% interval: [{nv['exact_ci'][0]:.1%}, "
                     f"{nv['exact_ci'][1]:.1%}]")
    return "\n".join(lines)
