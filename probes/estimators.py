"""Estimators fitted for many probes at once, in torch: ridge regression in closed form and
multinomial logistic regression by batched L-BFGS, each over a grid of L2 penalties.

Shapes: C cells (site, stack, layer, position), A penalties, n examples, d features, K
classes. Every cell has its own rows: `w: [C, n]` is 1 on the rows a cell trains on, 0
elsewhere (absent positions, other splits, missing labels).

The objectives are scikit-learn's, so results can be compared with it directly:
- ridge: `sum_i w_i (y_i - x_i.W - b)^2 + alpha |W|^2` (`sklearn.linear_model.Ridge(alpha)`,
  intercept not penalised);
- logistic: `sum_i w_i CE(softmax(x_i.W + b), y_i) + alpha/2 |W|^2`
  (`LogisticRegression(C=1/alpha)`, intercept not penalised) over the classes that the
  problem's training rows hold; with two, sklearn's binary model.
"""

from __future__ import annotations

import torch


def standardize(X: torch.Tensor, w: torch.Tensor):
    """Train statistics per cell and the standardised features.

    X: [C, n, d]; w: [C, n] training weights (0/1). Returns (Xs [C, n, d], mean [C, d],
    std [C, d]) with the mean and (population) standard deviation of the weighted rows; a
    constant feature keeps std 1 (as sklearn's StandardScaler)."""
    sw = w.sum(1).clamp(min=1)[:, None]
    mean = torch.einsum("cn,cnd->cd", w, X) / sw
    var = torch.einsum("cn,cnd->cd", w, (X - mean[:, None]) ** 2) / sw
    std = var.sqrt()
    std = torch.where(std > 1e-6 * (1 + mean.abs()), std, torch.ones_like(std))
    return (X - mean[:, None]) / std[:, None], mean, std


def ridge(Xs: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alphas: torch.Tensor):
    """Ridge for every cell, penalty and label set, from one eigendecomposition per cell.

    Xs: [C, n, d] standardised (weighted train mean 0); y: [C, n] or [C, J, n] (J label
    sets with the same training rows: the task's and the control's); w: [C, n]; alphas:
    [A]. Returns (W [C, A, d], b [C, A]), or ([C, J, A, d], [C, J, A]), in float64."""
    single = y.dim() == 2
    y = (y[:, None] if single else y).double()
    w = w.double()
    sw = w.sum(1).clamp(min=1)
    ym = (w[:, None] * y).sum(-1) / sw[:, None]                         # [C, J]
    Xw = Xs * w[..., None].to(Xs.dtype)
    G = (Xw.transpose(1, 2) @ Xs).double()                              # [C, d, d]
    r = torch.bmm((y - ym[..., None]) * w[:, None], Xw.double())        # [C, J, d]
    e, V = torch.linalg.eigh(G)
    Vr = torch.bmm(r, V)                                                # [C, J, d]
    coef = Vr[:, :, None, :] / (e[:, None, None, :].clamp(min=0)
                                + alphas.double()[None, None, :, None])  # [C, J, A, d]
    W = torch.einsum("cdk,cjak->cjad", V, coef)
    b = ym[..., None].expand(-1, -1, len(alphas)).clone()
    return (W[:, 0], b[:, 0]) if single else (W, b)


def contrasts(K: int, dtype=torch.float32) -> torch.Tensor:
    """[K, K-1] orthonormal columns orthogonal to the all-ones vector."""
    q, _ = torch.linalg.qr(torch.cat([torch.ones(K, 1), torch.eye(K)[:, : K - 1]], 1).double())
    return q[:, 1:].to(dtype)


def _loss_grad(theta, Z, Zt, Y, w, alphas, n_c, K, P, Q, M):
    """Mean-scaled logistic objective and gradient for theta [C, A, J*d + J] (J = K - 1).

    The class weights are W = Q (P * U): U [C, A, J, d] in class contrasts (Q [K, J]: a
    shared row is dropped, as softmax ignores it and the penalty sets it to 0) and in the
    preconditioned rotated basis (P [C, A, d]). Z: [C, n, d] and Zt, its transpose stored
    contiguous (the first product runs faster on it); Y: [C, A, 1, n] class indices
    (per problem); w: [C, n]; alphas: [C, A]; M: [C, A, K] 0 for a class the problem's
    training rows hold, `NO_LOGIT` for one they lack (its logit is left out). Classes lie along
    dim 2 and examples last, so the reductions over the few classes run over long contiguous
    rows; every pass over [C, A, K, n] works in place."""
    C, A, _ = theta.shape
    n, d = Z.shape[1], Z.shape[2]
    J = K - 1
    Wc = P[:, :, None, :] * theta[..., : J * d].reshape(C, A, J, d)
    W = torch.einsum("kj,cajd->cakd", Q, Wc)
    b = theta[..., J * d:] @ Q.T
    logits = torch.bmm(W.reshape(C, A * K, d), Zt).reshape(C, A, K, n)
    logits += (b + M)[..., None]
    picked = logits.gather(2, Y)[:, :, 0]                                # [C, A, n]
    top = logits.amax(2, keepdim=True)
    e = logits.sub_(top).exp_()
    total = e.sum(2, keepdim=True)
    lse = (top + total.log())[:, :, 0]
    reg = 0.5 * alphas * (Wc * Wc).sum((2, 3))
    f = ((w[:, None] * (lse - picked)).sum(-1) + reg) / n_c[:, None]
    wr = w[:, None, None, :].expand(-1, A, -1, -1)
    G = e.mul_(wr / total).scatter_add_(2, Y, -wr)                       # [C, A, K, n]
    gW = torch.bmm(G.reshape(C, A * K, n), Z).reshape(C, A, K, d)
    gWc = torch.einsum("kj,cakd->cajd", Q, gW) + alphas[..., None, None] * Wc
    gb = G.sum(-1) @ Q
    g = torch.cat([(P[:, :, None, :] * gWc).reshape(C, A, J * d), gb], -1) / n_c[:, None, None]
    return f, g


NO_LOGIT = -1e9   # the bias of a class a problem's training rows lack: never predicted
FEW_ROWS = 4       # cells with at most FEW_ROWS * d training rows are fitted in float64 ...
FEW_ITER = 1000    # ... for up to FEW_ITER iterations, to a largest gradient entry of FEW_TOL
FEW_TOL = 1e-6


def _used_rows(Z, Y, w):
    """Each cell's training rows first, and the rows that no cell trains on cut off (keys
    that stand in a subset of the examples train on few rows)."""
    m = int((w > 0).sum(1).max())
    if m >= 0.9 * w.shape[1]:
        return Z, Y, w
    idx = torch.sort((w <= 0).to(torch.int8), dim=1, stable=True).indices[:, :m]
    Z = Z.gather(1, idx[..., None].expand(-1, -1, Z.shape[2]))
    Y = Y.gather(3, idx[:, None, None, :].expand(-1, Y.shape[1], 1, -1))
    return Z, Y, w.gather(1, idx)


def logistic(Xs: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alphas: torch.Tensor,
             n_classes: int, max_iter: int = 200, tol: float = 1e-5, ftol: float = 1e-6,
             history: int = 10):
    """Multinomial logistic regression for every cell and penalty by batched, preconditioned
    L-BFGS (each problem its own curvature pairs and its own backtracking step).

    Xs: [C, n, d] standardised; y: [C, n] or [C, A, n] (one label vector per penalty: the
    task's and the control's can share one call) long class indices (any value where w is
    0); w: [C, n]; alphas: [A]. Returns (W [C, A, d, K], b [C, A, K]).

    As scikit-learn, a problem is fitted over the classes its training rows hold: a class
    they lack gets no logit (its b is `NO_LOGIT`: never predicted), and a problem with two
    classes is sklearn's binary model (one weight vector v, penalty alpha/2 |v|^2), which is
    the two-class multinomial at twice the penalty (the same decision function).

    The features are first rotated onto the eigenvectors of each cell's training Gram
    matrix (the L2 penalty does not change under a rotation) and each direction is scaled
    by 1 / sqrt(e / 2n + alpha / n), the inverse square root of a bound on the Hessian's
    diagonal there (Böhning's bound: the softmax Hessian is at most (I - 11^T/K) / 2);
    the weights are written in class contrasts, which drops the one direction (a row
    shared by every class) where only the penalty curves the objective. L-BFGS then sees
    a problem of condition near 1 instead of that of the residual stream's correlated
    features. A problem stops when its largest gradient entry
    is below `tol` (objective divided by n_train) or two steps in a row lower the objective
    by less than `ftol` of its value (float32 resolves about 1e-7). Finished problems leave
    the batch (see `_lbfgs`). Cells with few training rows for their width (at most
    `FEW_ROWS` * d) are fitted in float64 to `FEW_TOL`: their labels are nearly separable
    and the optimum so flat that where float32 stops decides test rows."""
    C, _, d = Xs.shape
    K = n_classes
    A = len(alphas)
    dt = Xs.dtype
    if y.dim() == 2:
        y = y[:, None].expand(-1, A, -1)
    few = w.sum(1) <= FEW_ROWS * d
    if dt != torch.float64 and bool(few.any()):
        # few training rows for the width: nearly separable, a flat optimum that float32
        # cannot resolve (the test accuracy still moves by several rows where float32 stops)
        W = torch.empty(C, A, d, K, dtype=dt)
        b = torch.empty(C, A, K, dtype=dt)
        if not bool(few.all()):
            W[~few], b[~few] = logistic(Xs[~few], y[~few], w[~few], alphas, K, max_iter, tol,
                                        ftol, history)
        W64, b64 = logistic(Xs[few].double(), y[few], w[few].double(), alphas.double(), K,
                            FEW_ITER, FEW_TOL, 1e-12, history)
        W[few], b[few] = W64.to(dt), b64.to(dt)
        return W, b
    Y = y.clamp(min=0, max=K - 1)[:, :, None, :].contiguous()           # [C, A, 1, n]
    n_c = w.sum(1).clamp(min=1)
    present = torch.zeros(C, A, K, dtype=dt).scatter_add_(
        2, Y[:, :, 0], w[:, None, :].expand(-1, A, -1)) > 0               # [C, A, K]
    M = torch.where(present, 0.0, NO_LOGIT).to(dt)
    al = alphas.to(dt)[None] * torch.where(present.sum(-1) == 2, 2.0, 1.0).to(dt)  # [C, A]
    e, V = torch.linalg.eigh((Xs * w[..., None]).transpose(1, 2) @ Xs)
    Z = Xs @ V
    P = (e.clamp(min=0)[:, None, :] / (2 * n_c[:, None, None])
         + al[..., None] / n_c[:, None, None]).rsqrt()                     # [C, A, d]
    Q = contrasts(K, dt)
    J = K - 1
    theta = _lbfgs(torch.zeros(C, A, J * d + J, dtype=dt), Z, Y, w, al, n_c, K, P, Q, M,
                   max_iter, tol, ftol, history)
    U = P[:, :, None, :] * theta[..., : J * d].reshape(C, A, J, d)
    W = torch.einsum("cde,kj,caje->cadk", V, Q, U)
    return W, theta[..., J * d:] @ Q.T + M


def _lbfgs(theta, Z, Y, w, al, n_c, K, P, Q, M, max_iter, tol, ftol, history):
    """Batched L-BFGS over the problems [C, A] of `_loss_grad` from `theta`; returns the
    solutions [C, A, D].

    Problems converge at very different speeds (a strong penalty in tens of iterations, a
    weak one on nearly separable labels in hundreds), so the batch is compacted whenever
    half its slots are finished: each cell's live problems move to the front of its row,
    the row is cut to the largest live count, cells with none leave, and so do the rows
    that no remaining cell trains on. A finished problem still in a row only pads it (its
    step is 0)."""
    C, A, D = theta.shape
    dt = theta.dtype
    out = theta.clone()
    slot = torch.arange(C * A).reshape(C, A)        # each slot's problem in `out`
    Zc, Yc, wc = _used_rows(Z, Y, w)
    Zt = Zc.transpose(1, 2).contiguous()
    nc, Pc, alc, Mc = n_c, P, al, M

    def fg(th, rows=None):
        """Objective and gradient of the problems of cells `rows` (others: zeros)."""
        if rows is None or int(rows.sum()) > 0.75 * len(rows):
            return _loss_grad(th, Zc, Zt, Yc, wc, alc, nc, K, Pc, Q, Mc)
        f_all = torch.zeros(th.shape[:2], dtype=dt)
        g_all = torch.zeros_like(th)
        c = torch.nonzero(rows).flatten()
        if len(c):
            f_all[c], g_all[c] = _loss_grad(th[c], Zc[c], Zt[c], Yc[c], wc[c], alc[c], nc[c], K,
                                            Pc[c], Q, Mc[c])
        return f_all, g_all

    f, g = fg(theta)
    S, Yh, rho = [], [], []
    gamma = torch.ones(C, A, dtype=dt)
    done = torch.zeros(C, A, dtype=torch.bool)
    slow = torch.zeros(C, A, dtype=torch.bool)
    for _ in range(max_iter):
        done |= g.abs().amax(-1) < tol
        live = int((~done).sum())
        if live == 0:
            break
        if live <= done.numel() // 2:                # compact the batch
            out.view(-1, D)[slot[done]] = theta[done]
            order = torch.sort(done.to(torch.int8), dim=1, stable=True).indices
            per = (~done).sum(1)
            keep = torch.nonzero(per).flatten()
            ic, ia = keep[:, None], order[keep, : int(per.max())]
            theta, f, g, gamma, done, slow, slot, Yc, Pc, alc, Mc = (x[ic, ia] for x in (
                theta, f, g, gamma, done, slow, slot, Yc, Pc, alc, Mc))
            S, Yh, rho = [x[ic, ia] for x in S], [x[ic, ia] for x in Yh], [x[ic, ia] for x in rho]
            Zc, Yc, wc = _used_rows(Zc[keep], Yc, wc[keep])
            Zt = Zc.transpose(1, 2).contiguous()
            nc = nc[keep]
        q = g.clone()
        coeffs = []
        for s, yy, r in zip(reversed(S), reversed(Yh), reversed(rho)):
            a = r * (s * q).sum(-1)
            q -= a[..., None] * yy
            coeffs.append(a)
        z = gamma[..., None] * q
        for s, yy, r, a in zip(S, Yh, rho, reversed(coeffs)):
            beta = r * (yy * z).sum(-1)
            z += s * (a - beta)[..., None]
        direction = -z
        slope = (g * direction).sum(-1)
        bad = (slope >= 0)[..., None]
        direction = torch.where(bad, -g, direction) * (~done)[..., None]
        slope = torch.where(bad[..., 0], -(g * g).sum(-1), slope) * ~done
        t = torch.ones_like(f)
        pending = ~done
        f_new, g_new = f.clone(), g.clone()
        for _ in range(10):
            ft, gt = fg(theta + t[..., None] * direction, pending.any(1))
            ok = pending & (ft <= f + 1e-4 * t * slope)
            f_new = torch.where(ok, ft, f_new)
            g_new = torch.where(ok[..., None], gt, g_new)
            pending &= ~ok
            if not bool(pending.any()):
                break
            # the minimum of the quadratic through f, slope and ft, kept within [t/10, t/2]
            fit = -slope * t * t / (2 * (ft - f - slope * t)).clamp(min=1e-30)
            t = torch.where(pending, torch.minimum(torch.maximum(fit, t / 10), t / 2), t)
        done |= pending          # no decrease within float32's resolution: converged
        t = torch.where(pending, torch.zeros_like(t), t)      # no decrease found: stay
        step = t[..., None] * direction
        theta = theta + step
        dg = g_new - g
        sy = (step * dg).sum(-1)
        valid = sy > 1e-12
        S.append(step)
        Yh.append(dg)
        rho.append(torch.where(valid, 1.0 / sy.clamp(min=1e-30), torch.zeros_like(sy)))
        gamma = torch.where(valid, sy / (dg * dg).sum(-1).clamp(min=1e-30), gamma)
        if len(S) > history:
            S.pop(0), Yh.pop(0), rho.pop(0)
        small = (f - f_new) <= ftol * f.abs().clamp(min=1e-3)
        done |= small & slow                                   # no progress left
        slow = small
        f, g = f_new, g_new
    out.view(-1, D)[slot.flatten()] = theta.reshape(-1, D)
    return out
