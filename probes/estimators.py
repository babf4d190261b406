"""Estimators fitted for many probes at once, in torch: ridge regression in closed form and
multinomial logistic regression by batched L-BFGS, each over a grid of L2 penalties.

Shapes: C cells (site, stack, layer, position), A penalties, n examples, d features, K
classes. Every cell has its own rows: `w: [C, n]` is 1 on the rows a cell trains on, 0
elsewhere (absent positions, other splits, missing labels).

The objectives are scikit-learn's, so results can be compared with it directly:
- ridge: `sum_i w_i (y_i - x_i.W - b)^2 + alpha |W|^2` (`sklearn.linear_model.Ridge(alpha)`,
  intercept not penalised);
- logistic: `sum_i w_i CE(softmax(x_i.W + b), y_i) + alpha/2 |W|^2`
  (`LogisticRegression(C=1/alpha)`, multinomial, intercept not penalised).
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


def _loss_grad(theta, Z, Y, w, alphas, n_c, K, P, Q):
    """Mean-scaled logistic objective and gradient for theta [C, A, J*d + J] (J = K - 1).

    The class weights are W = Q (P * U): U [C, A, J, d] in class contrasts (Q [K, J]: a
    shared row is dropped, as softmax ignores it and the penalty sets it to 0) and in the
    preconditioned rotated basis (P [C, A, d]). Z: [C, n, d]; Y: [C, A, K, n] one-hot (per
    problem); w: [C, n]. Classes lie along dim 2 and examples last, so the reductions over
    the few classes run over long contiguous rows."""
    C, A, _ = theta.shape
    n, d = Z.shape[1], Z.shape[2]
    J = K - 1
    Wc = P[:, :, None, :] * theta[..., : J * d].reshape(C, A, J, d)
    W = torch.einsum("kj,cajd->cakd", Q, Wc)
    b = theta[..., J * d:] @ Q.T
    logits = torch.bmm(W.reshape(C, A * K, d), Z.transpose(1, 2)).reshape(C, A, K, n)
    logits += b[..., None]
    top = logits.amax(2, keepdim=True)
    e = (logits - top).exp_()
    total = e.sum(2, keepdim=True)
    lse = (top + total.log())[:, :, 0]                                   # [C, A, n]
    picked = (logits * Y).sum(2)
    reg = 0.5 * alphas[None, :] * (Wc * Wc).sum((2, 3))
    f = ((w[:, None] * (lse - picked)).sum(-1) + reg) / n_c[:, None]
    G = e.div_(total).sub_(Y).mul_(w[:, None, None, :])                  # [C, A, K, n]
    gW = torch.bmm(G.reshape(C, A * K, n), Z).reshape(C, A, K, d)
    gWc = torch.einsum("kj,cakd->cajd", Q, gW) + alphas[None, :, None, None] * Wc
    gb = G.sum(-1) @ Q
    g = torch.cat([(P[:, :, None, :] * gWc).reshape(C, A, J * d), gb], -1) / n_c[:, None, None]
    return f, g


def logistic(Xs: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alphas: torch.Tensor,
             n_classes: int, max_iter: int = 200, tol: float = 1e-5, ftol: float = 1e-6,
             history: int = 10):
    """Multinomial logistic regression for every cell and penalty by batched, preconditioned
    L-BFGS (each problem its own curvature pairs and its own backtracking step).

    Xs: [C, n, d] standardised; y: [C, n] or [C, A, n] (one label vector per penalty: the
    task's and the control's can share one call) long class indices (any value where w is
    0); w: [C, n]; alphas: [A]. Returns (W [C, A, d, K], b [C, A, K]).

    The features are first rotated onto the eigenvectors of each cell's training Gram
    matrix (the L2 penalty does not change under a rotation) and each direction is scaled
    by 1 / sqrt(e / 2n + alpha / n), the inverse square root of a bound on the Hessian's
    diagonal there (Böhning's bound: the softmax Hessian is at most (I - 11^T/K) / 2);
    the weights are written in class contrasts, which drops the one direction (a row
    shared by every class) where only the penalty curves the objective. L-BFGS then sees
    a problem of condition near 1 instead of that of the residual stream's correlated
    features. A problem stops when its largest gradient entry
    is below `tol` (objective divided by n_train) or two steps in a row lower the objective
    by less than `ftol` of its value (float32 resolves about 1e-7)."""
    C, _, d = Xs.shape
    K = n_classes
    A = len(alphas)
    dt = Xs.dtype
    alphas = alphas.to(dt)
    if y.dim() == 2:
        y = y[:, None].expand(-1, A, -1)
    Y = torch.nn.functional.one_hot(y.clamp(min=0, max=K - 1), K).to(dt).transpose(2, 3)
    n_c = w.sum(1).clamp(min=1)
    e, V = torch.linalg.eigh((Xs * w[..., None]).transpose(1, 2) @ Xs)
    Z = Xs @ V
    P = (e.clamp(min=0)[:, None, :] / (2 * n_c[:, None, None])
         + alphas[None, :, None] / n_c[:, None, None]).rsqrt()            # [C, A, d]
    Q = contrasts(K, dt)
    J = K - 1
    theta = torch.zeros(C, A, J * d + J, dtype=dt)
    out = theta.clone()
    cells = torch.arange(C)             # the cells still being solved (compacted as they end)
    Zc, Yc, wc, nc, Pc = Z, Y, w, n_c, P

    def fg(th, rows=None):
        """Objective and gradient of the problems of cells `rows` (others: zeros)."""
        if rows is None or int(rows.sum()) > 0.75 * len(rows):
            return _loss_grad(th, Zc, Yc, wc, alphas, nc, K, Pc, Q)
        f_all = torch.zeros(th.shape[:2], dtype=dt)
        g_all = torch.zeros_like(th)
        c = torch.nonzero(rows).flatten()
        if len(c):
            f_all[c], g_all[c] = _loss_grad(th[c], Zc[c], Yc[c], wc[c], alphas, nc[c], K,
                                            Pc[c], Q)
        return f_all, g_all

    f, g = fg(theta)
    S, Yh, rho = [], [], []
    gamma = torch.ones(C, A, dtype=dt)
    done = torch.zeros(C, A, dtype=torch.bool)
    slow = torch.zeros(C, A, dtype=torch.bool)
    for _ in range(max_iter):
        done |= g.abs().amax(-1) < tol
        live = ~done.all(1)
        if not bool(live.any()):
            break
        if int(live.sum()) <= len(live) // 2:        # drop the finished cells from the batch
            out[cells[~live]] = theta[~live]
            keep = torch.nonzero(live).flatten()
            cells, theta, f, g, gamma, done, slow = (x[keep] for x in (
                cells, theta, f, g, gamma, done, slow))
            S, Yh, rho = [x[keep] for x in S], [x[keep] for x in Yh], [x[keep] for x in rho]
            Zc, Yc, wc, nc, Pc = (x[keep] for x in (Zc, Yc, wc, nc, Pc))
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
    out[cells] = theta
    theta = out
    U = P[:, :, None, :] * theta[..., : J * d].reshape(C, A, J, d)
    W = torch.einsum("cde,kj,caje->cadk", V, Q, U)
    return W, theta[..., J * d:] @ Q.T
