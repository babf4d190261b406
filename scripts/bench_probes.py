"""Benchmark: the probe grid fitted at once in torch (`probes.fit`) against scikit-learn
fitted cell by cell on the same features, splits, penalties and selection rule.

    OMP_NUM_THREADS=1 python scripts/bench_probes.py --sk-cells 0   # every cell (~13 min)
    OMP_NUM_THREADS=1 python scripts/bench_probes.py                # 24 cells per target
    python scripts/bench_probes.py --n 500 --sk-cells 8             # quicker

The grid: every layer x every input position (role and occurrence) of `quadratic-small`'s
resid_pre, for 5 targets (class, D_sign, D_digit_0: logistic; D_value, ac: ridge), each
with its control task. scikit-learn (`LogisticRegression(C=1/alpha)`, `Ridge(alpha)`) is
run to convergence (tol 1e-6 and up to 10,000 iterations: the weakly penalised fits of
D_digit_0 run past 5,000 on some cells; the count left unconverged is printed) on `--sk-cells` cells
drawn at random (all if 0) and its time extrapolated to the whole grid, as printed. Prints
our time, sklearn's (CPU seconds of this process, so that other load on the machine counts
for neither), the ratio, the largest accuracy (and R^2) difference over the compared cells
(also over those with at least 100 test rows, where one example is at most 0.01), and the
peak resident memory of the process.

Beside our difference it prints scikit-learn's own: the same cells fitted again at its
default tolerance (1e-4, not timed) against tol 1e-6. Where the test accuracy moves by more
than 0.01 between the two, the cell's answer depends on where an optimiser stops (weak
penalties on nearly separable labels): the fit must be run close to the optimum to agree.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings

import numpy as np
import torch

TARGETS = ("class", "D_sign", "D_digit_0", "D_value", "ac")
MAX_ITER = 10_000


def sklearn_cell(X, y, part, kind, alphas, tol=1e-6, stats=None):
    """Standardise with the train rows, fit every alpha on train, pick on validation (as
    probes.fit: accuracy then lower log-loss; R^2), score on test. X [n, d]; y [n] with
    NaN for missing; part [n] in 0/1/2. Returns (score, alpha); counts fits and unconverged
    fits in `stats`."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score

    ok = ~np.isnan(y)
    tr, va, te = (ok & (part == j) for j in range(3))
    mean, std = X[tr].mean(0), X[tr].std(0)
    std[std <= 1e-6 * (1 + np.abs(mean))] = 1.0
    Xs = (X - mean) / std
    if kind == "class" and len(np.unique(y[tr])) < 2:       # one class: it is the answer
        return float((y[te] == y[tr][0]).mean()), float("nan")
    best = None
    for a in alphas:
        if kind == "regression":
            m = Ridge(alpha=a).fit(Xs[tr], y[tr])
            crit = (r2_score(y[va], m.predict(Xs[va])), 0.0)
        else:
            m = LogisticRegression(C=1.0 / a, max_iter=MAX_ITER, tol=tol).fit(
                Xs[tr], y[tr].astype(int))
            if stats is not None:
                stats["fits"] = stats.get("fits", 0) + 1
                stats["unconverged"] = (stats.get("unconverged", 0)
                                        + int(m.n_iter_.max() >= MAX_ITER))
            p = m.predict_proba(Xs[va])
            acc = float((m.classes_[p.argmax(1)] == y[va]).mean())
            # log-loss by hand: a validation class the training rows lack has probability ~0
            col = {c: i for i, c in enumerate(m.classes_)}
            pv = np.array([p[r, col[c]] if c in col else 0.0
                           for r, c in enumerate(y[va].astype(int))])
            crit = (acc, float(np.log(np.clip(pv, 1e-15, 1)).mean()))
        if best is None or crit > best[0]:
            best = (crit, a, m)
    _, a, m = best
    if kind == "regression":
        return float(r2_score(y[te], m.predict(Xs[te]))), a
    return float((m.predict(Xs[te]) == y[te]).mean()), a


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="quadratic-small")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--sk-cells", type=int, default=24,
                    help="cells per target fitted by sklearn (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu",
                    help="where the activations are collected: cpu (default), cuda, cuda:N")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                    help="of the model (the probes are fitted on the CPU in float64/32)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")   # sklearn's ConvergenceWarning, if any

    import sklearn.linear_model  # noqa: F401  (imported before any timing)
    import sklearn.metrics  # noqa: F401

    import interp
    import probes
    from probes.controls import control_labels, split_groups
    from probes.fitting import LOGISTIC_ALPHAS, RIDGE_ALPHAS, resolve_labels

    bridge, task = interp.load_model(args.model, args.device, args.dtype)
    examples = task.generate(args.n, seed=args.seed)
    t0 = time.process_time()
    acts = probes.collect(bridge, task, examples, sites=("resid_pre",), positions="input")
    t_collect = time.process_time() - t0
    n_cells = sum(len(acts.layers[s]) * len(acts.columns(s)) for s in acts.stacks)
    print(f"{args.model}: {args.n} equations, {n_cells} cells (layers {acts.layers}, "
          f"{len(acts.keys)} input positions), collect {t_collect:.1f} s, "
          f"threads {torch.get_num_threads()}, {args.device} {args.dtype}")
    part = split_groups(acts.groups, seed=args.seed).numpy()
    ours_total = sk_total = 0.0
    worst_acc = worst_r2 = worst_acc_big = worst_self = 0.0
    all_acc: list[float] = []
    stats: dict = {}
    rng = np.random.default_rng(args.seed)
    for target in TARGETS:
        t0 = time.process_time()
        # the estimators alone (what sklearn is compared with): no positional baseline,
        # no bootstrap intervals (their cost is timed apart below)
        res = probes.fit(acts, target, seed=args.seed, positional=False, n_boot=0)
        t_ours = time.process_time() - t0
        ours_total += t_ours
        df = res.frame()
        y, kind, _, _ = resolve_labels(acts, target)
        ctrl = control_labels(acts.types, acts.keys, y, args.seed)
        alphas = RIDGE_ALPHAS if kind == "regression" else LOGISTIC_ALPHAS
        cells = list(df.itertuples())
        if args.sk_cells:
            cells = [cells[i] for i in sorted(rng.choice(len(cells), min(args.sk_cells,
                                                                          len(cells)), False))]
        t0 = time.process_time()
        diffs, big, selfd = [], [], []
        for row in cells:
            p = acts.position_index(row.position)
            X = acts.get(row.site, row.layer, row.stack)[:, p].double().numpy()
            has = acts.present[:, p].numpy()
            ys = np.where(has, y, np.nan)
            yc = np.where(has, ctrl[:, p], np.nan)
            if np.isnan(row.score):
                continue
            s_task, _ = sklearn_cell(X, ys, part, kind, alphas, stats=stats)
            s_ctrl, _ = sklearn_cell(X, yc, part, kind, alphas, stats=stats)
            raw = res.raw_control[(row.site, row.stack, row.layer, row.position)]
            # a control is compared where one is reported: where its labels are constant
            # (one token type at the position) R^2 is undefined and probes.fit reports none
            pair = [abs(s_task - row.score)] + ([abs(s_ctrl - raw)] if row.control == row.control
                                                else [])
            diffs += pair
            if row.n_test >= 100:
                big += pair
            if kind == "class":         # sklearn against itself at its default tolerance
                t1 = time.process_time()
                selfd += [abs(sklearn_cell(X, ys, part, kind, alphas, 1e-4)[0] - s_task),
                          abs(sklearn_cell(X, yc, part, kind, alphas, 1e-4)[0] - s_ctrl)]
                t0 += time.process_time() - t1          # not timed
        t_sk = (time.process_time() - t0) * len(df) / max(1, len(cells))
        sk_total += t_sk
        worst = max(diffs) if diffs else float("nan")
        worst_big = max(big) if big else float("nan")
        if kind == "class":
            worst_acc = max(worst_acc, worst)
            worst_self = max(worst_self, max(selfd) if selfd else 0.0)
            worst_acc_big = max(worst_acc_big, worst_big)
            all_acc += diffs
        else:
            worst_r2 = max(worst_r2, worst)
        print(f"  {target:10s} {kind:10s} ours {t_ours:6.1f} s   sklearn {t_sk:7.1f} s "
              + (f"(all {len(df)} cells)   ratio " if len(cells) == len(df) else
                 f"({len(cells)} of {len(df)} cells timed, extrapolated)   ratio ")
              + f"{t_sk / t_ours:5.1f}x   largest |difference| {worst:.4f} "
              f"({worst_big:.4f} on cells with >= 100 test rows; "
              f"{'accuracy' if kind == 'class' else 'R^2'}, task and control)"
              + (f"; sklearn tol 1e-4 vs 1e-6: {max(selfd):.4f}" if selfd else ""))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total: ours {ours_total:.1f} s, sklearn {sk_total:.1f} s"
          f"{'' if args.sk_cells == 0 else ' (extrapolated)'}, ratio "
          f"{sk_total / ours_total:.1f}x (target >= 10x)")
    print(f"largest accuracy difference {worst_acc:.4f} (target <= 0.01), "
          f"{worst_acc_big:.4f} on cells with >= 100 test rows, mean "
          f"{np.mean(all_acc) if all_acc else float('nan'):.4f}; largest R^2 difference "
          f"{worst_r2:.4f}")
    print(f"scikit-learn against itself (tol 1e-4 vs 1e-6, same cells): largest accuracy "
          f"difference {worst_self:.4f}; sklearn fits {stats.get('fits', 0)}, unconverged at "
          f"{MAX_ITER} iterations {stats.get('unconverged', 0)}")
    print(f"peak resident memory {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
