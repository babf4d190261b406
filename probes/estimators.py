"""Estimators fitted for many probes at once, in torch: ridge regression in closed form and
multinomial logistic regression by batched L-BFGS, each over a grid of L2 penalties.
Over 400 lines: most of it is the L-BFGS solver (its curvature, line search, running
probabilities and batch layout), one piece that only `logistic` calls and whose parts the
tests reach directly.

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


def _logits(theta, Zbt, Q, keep=None):
    """[C, A, K, n] logits of the weights theta [C, A, J, d1] (class contrasts; the last
    column is the intercept) on the augmented features Zbt [C, d1, n]; with `keep`
    [C, A, K, 1] (1 for the classes a problem has, 0 for those it lacks), the lacking
    classes' logits are 0."""
    C, A, J, d1 = theta.shape
    K = Q.shape[0]
    W = torch.matmul(Q, theta)
    if keep is not None:
        W = W * keep
    return torch.bmm(W.reshape(C, A * K, d1), Zbt).reshape(C, A, K, -1)


LOWEST = -87.0   # torch's float32 exp of an argument below about -87.3 (a subnormal result)
                 # takes a path about 35x slower; a probability under exp(-87) ~ 1.6e-38 of
                 # the row's largest is kept at that (too large, never too small)


def _probabilities(theta, Zbt, Q, M, w):
    """Class probabilities [C, A, K, n] computed from the weights: 0 exactly on the rows a
    cell does not train on (w [C, n] is 0) and for the classes a problem lacks (M < 0)."""
    P = _logits(theta, Zbt, Q).add_(M[..., None])
    P.sub_(P.amax(2, keepdim=True)).clamp_(min=LOWEST).exp_()
    P.div_(P.sum(2, keepdim=True))
    if bool((M < 0).any()):
        P.mul_((M == 0).to(P.dtype)[..., None])
    return P.mul_(w.to(P.dtype)[:, None, None, :])


def _gradient(p, theta, Zbt, Yz, al, n_c, Q):
    """Gradient [C, A, J, d1] of the mean-scaled objective at the class probabilities
    p [C, A, K, n] (0 on the rows a cell does not train on): the products p Z less the
    constant Yz [C, A, K, d1] (each class's training rows summed), in class contrasts."""
    C, A, K, n = p.shape
    pz = torch.bmm(p.reshape(C, A * K, n), Zbt.transpose(1, 2)).reshape(C, A, K, -1)
    g = torch.matmul(Q.T, pz - Yz)
    g[..., :-1] += al[..., None, None] * theta[..., :-1]
    return g / n_c[:, None, None, None]


def _curvature(p, Zbt, w, n_c, al, Q):
    """Each problem's initial inverse Hessian for L-BFGS, as scale factors: H0 R = Bi (R * sc)
    for R [C, A, J, d1] in the rotated basis. Returns (sc [C, A, 1, d1], Bi [C, A, J, J]).

    The Hessian of the mean cross-entropy is sum_i z_i z_i^T (x) S_i / n with S_i =
    diag(p_i) - p_i p_i^T. It is approximated by A (x) B (K-FAC, Martens & Grosse 2015):
    A = sum_i tau_i z_i z_i^T / n with tau_i = tr S_i (the rows that still carry curvature),
    kept diagonal in the eigenbasis of the training Gram matrix (Zbt [C, d1, n]: the
    rotated features), and B = sum_i S_i / sum_i tau_i in class contrasts. The penalty
    gamma I enters as Tikhonov damping split between the factors (pi sqrt(gamma) and
    sqrt(gamma) / pi, pi balancing their mean eigenvalues)."""
    C, A, K, n = p.shape
    J = K - 1
    tau = w[:, None, :] - (p * p).sum(2)         # [C, A, n] (p is 0 where w is)
    Af = torch.bmm(Zbt * Zbt, tau.transpose(1, 2)).transpose(1, 2).double(
        ) / n_c.double()[:, None, None]                                     # [C, A, d1]
    S = torch.diag_embed(p.sum(-1)) - torch.matmul(p, p.transpose(2, 3))    # [C, A, K, K]
    B = (Q.T @ S @ Q).double() / tau.sum(-1).double().clamp(min=1e-30)[..., None, None]
    gam = (al / n_c[:, None]).double().sqrt()                               # [C, A]
    pi = ((Af.mean(-1) + 1e-12) / (torch.diagonal(B, dim1=-2, dim2=-1).mean(-1) + 1e-12)).sqrt()
    sc = 1 / (Af + (pi * gam)[..., None])
    Bi = torch.linalg.inv(B + (gam / pi)[..., None, None] * torch.eye(J, dtype=torch.float64))
    return sc[:, :, None, :].to(p.dtype), Bi.to(p.dtype)


def _change(D, p, w, t):
    """Each row's change of log sum_k exp(L_k), log sum_k p_k exp(t D_k), when the logits
    L move by t D (D, p: [..., K, n]; w [..., n]; t [...]), and the probabilities after the
    move. Where the sum of p expm1(t D) is at least -1/2 and no logit rises by more than
    80, as its log1p (no cancellation: exact to the change's own resolution, however small);
    elsewhere (a large change) as a logsumexp. 0 on the rows not trained on (w is 0)."""
    tD = D * t[..., None, None]
    lp = p.log()                                                       # -inf where p is 0
    _, change, near = _full_step(tD.clamp(max=80.0), p)
    near &= tD.amax(-2) <= 80.0
    if not bool(near.all()):
        change = torch.where(near, change, torch.logsumexp(lp + tD, -2))
    change = change.masked_fill_(w <= 0, 0.0)
    return change, (lp + tD - change[..., None, :]).exp_()


def _full_step(D, p):
    """The step at t = 1, for every row (D, p: [..., K, n]): s = sum_k p_k expm1(D_k), the
    change log1p(s) of log sum_k exp(L_k), and whether that is safe: 1 + s >= 1/2 (1 + s,
    and so the change, is then exact to float32's resolution however small the change). A
    row whose logits move far (1 + s near 0, or exp past its range: inf, nan) is not safe."""
    sp = torch.expm1(D).mul_(p).sum(-2)
    return sp, torch.log1p(sp), (sp >= -0.5) & torch.isfinite(sp)


def _moved(D, p, sp):
    """The probabilities after a full step, p exp(D) / (1 + s), written over D: each to
    float32's relative resolution (p + p expm1(D) would lose a small probability whose class
    falls far, and with it the class's rise at a later step)."""
    return D.exp_().mul_(p).div_(sp.add(1)[..., None, :])


NO_LOGIT = -1e9   # the bias of a class a problem's training rows lack: never predicted
FEW_ROWS = 4       # cells with at most FEW_ROWS * d training rows are fitted as a batch apart
MAX_ITER = 300     # L-BFGS iterations at most ...
TOL = 3e-6         # ... until the largest gradient entry (objective / n_train) is below TOL
HISTORY = 5        # L-BFGS curvature pairs kept
REFRESH = 5        # iterations between two evaluations of the curvature factors ...
EXACT = 20         # ... and between two computations of the probabilities from the weights
COMPACT = 0.75     # the batch is laid out again when that leaves at most this share of its cost
GROUP_COST = 1e7   # a group's own cost per iteration (Python, small tensors), in the units of
                   # its products' cost (classes x rows x features per live problem)


def _used_rows(w):
    """Each cell's training rows first, and the rows that no cell trains on cut off (keys
    that stand in a subset of the examples train on few rows): an index [C, m], or None
    when there is little to cut."""
    m = int((w > 0).sum(1).max())
    if m >= 0.9 * w.shape[1]:
        return None
    return torch.sort((w <= 0).to(torch.int8), dim=1, stable=True).indices[:, :m]


def logistic(Xs: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alphas: torch.Tensor,
             n_classes: int, max_iter: int | None = None, tol: float | None = None,
             history: int | None = None):
    """Multinomial logistic regression for every cell and penalty by batched L-BFGS with a
    Kronecker-factored curvature as its initial inverse Hessian (each problem its own
    factors, curvature pairs and backtracking step).

    Xs: [C, n, d] standardised; y: [C, n] or [C, A, n] (one label vector per penalty: the
    task's and the control's can share one call) long class indices (any value where w is
    0); w: [C, n]; alphas: [A]. Returns (W [C, A, d, K], b [C, A, K]).

    As scikit-learn, a problem is fitted over the classes its training rows hold: a class
    they lack gets no logit (its b is `NO_LOGIT`: never predicted), and a problem with two
    classes is sklearn's binary model (one weight vector v, penalty alpha/2 |v|^2), which is
    the two-class multinomial at twice the penalty (the same decision function).

    A problem stops when the largest entry of its gradient (of the objective divided by
    n_train, as sklearn's `tol`, here in the rotated basis and class contrasts) is below
    `tol` (default `TOL`), when no step lowers its objective (the decrease is computed from
    the change of the logits, exact to float32's resolution of the change, not of the
    objective), or after `max_iter` iterations (`MAX_ITER`). The weights are written in class
    contrasts, which drops the one direction (a row shared by every class) that only the
    penalty curves. Cells with few training rows for their width (at most `FEW_ROWS` * d)
    are fitted as a batch of their own: their nearly separable labels converge slowly, and
    in a mixed batch they would keep the other cells' rows streaming through every product."""
    C, _, d = Xs.shape
    K = n_classes
    A = len(alphas)
    dt = Xs.dtype
    max_iter = MAX_ITER if max_iter is None else max_iter
    tol = TOL if tol is None else tol
    history = HISTORY if history is None else history
    if y.dim() == 2:
        y = y[:, None].expand(-1, A, -1)
    few = w.sum(1) <= FEW_ROWS * d
    if bool(few.any()) and not bool(few.all()):
        # few training rows for the width: nearly separable labels, slow to converge; a batch
        # of their own keeps them from holding the others' rows in every product
        W = torch.empty(C, A, d, K, dtype=dt)
        b = torch.empty(C, A, K, dtype=dt)
        for part in (few, ~few):
            W[part], b[part] = logistic(Xs[part], y[part], w[part], alphas, K, max_iter, tol,
                                        history)
        return W, b
    Y = y.clamp(min=0, max=K - 1)[:, :, None, :].contiguous()           # [C, A, 1, n]
    n_c = w.sum(1).clamp(min=1)
    present = torch.zeros(C, A, K, dtype=dt).scatter_add_(
        2, Y[:, :, 0], w[:, None, :].expand(-1, A, -1)) > 0               # [C, A, K]
    M = torch.where(present, 0.0, NO_LOGIT).to(dt)
    al = alphas.to(dt)[None] * torch.where(present.sum(-1) == 2, 2.0, 1.0).to(dt)  # [C, A]
    # the features rotated onto the eigenvectors of each cell's training Gram matrix (the
    # penalty does not change under a rotation), with a column of ones for the intercept
    _, V = torch.linalg.eigh((Xs * w[..., None]).transpose(1, 2) @ Xs)
    Zbt = torch.cat([Xs @ V, torch.ones(C, Xs.shape[1], 1, dtype=dt)], 2).transpose(
        1, 2).contiguous()                                                  # [C, d + 1, n]
    Q = contrasts(K, dt)
    theta = _lbfgs(torch.zeros(C, A, K - 1, d + 1, dtype=dt), Zbt, Y, w, al, n_c, Q, M,
                   max_iter, tol, history)
    Wf = torch.matmul(Q, theta)                                          # [C, A, K, d + 1]
    return torch.matmul(V[:, None], Wf[..., :d].transpose(2, 3)), Wf[..., d] + M


def _lbfgs(theta, Zbt, Y, w, al, n_c, Q, M, max_iter, tol, history):
    """Batched L-BFGS over the problems [C, A] from `theta` [C, A, J, d1]; returns the
    solutions.

    The initial inverse Hessian of the two-loop recursion is the problem's Kronecker-factored
    curvature (`_curvature`, evaluated every `REFRESH` iterations), scaled as usual by the
    last curvature pair: the residual stream's correlated features (the basis is the
    eigenbasis of their Gram matrix), the classes' coupling and the flat directions of
    nearly separable labels are then far better conditioned than under a scalar.

    Each iteration takes one product for the logits of the search direction D (the logits
    move by t D along it: the line search needs no product, and the objective's decrease is
    computed from D itself, not as a difference of two large sums) and one for the gradient.
    The probabilities follow the step by a running update, recomputed from the weights every
    `EXACT` iterations. Problems converge at very different speeds: see `_run` for how the
    batch shrinks with them."""
    C, A, J, d1 = theta.shape
    K = J + 1
    dt = theta.dtype
    out = theta.clone()
    # each class's training rows summed: the constant part of the gradient
    Yz = torch.bmm(torch.zeros(C, A * K, Zbt.shape[2], dtype=dt).scatter_(
        1, Y[:, :, 0] + K * torch.arange(A)[None, :, None],
        w[:, None, :].expand(-1, A, -1).to(dt)), Zbt.transpose(1, 2)).reshape(C, A, K, d1)
    st = dict(theta=theta, slot=torch.arange(C * A).reshape(C, A), Yz=Yz, al=al, M=M,
              gamma=torch.ones(C, A, dtype=dt), done=torch.zeros(C, A, dtype=torch.bool),
              g=None, sc=None, Bi=None, p=None, S=[], Yh=[], rho=[], w=w, n_c=n_c, Zbt=Zbt)
    idx = _used_rows(w)
    if idx is not None:
        st = _rows(st, idx)
    # the rows a cell does not train on read zero features: their logits never move
    st["Zbt"] = st["Zbt"] * (st["w"] > 0).to(dt)[:, None, :]
    todo = [(st, 0)]
    while todo:                    # a batch cut into two groups hands them back: run each
        st, start = todo.pop()
        todo += _run(st, start, out, Q, max_iter, tol, history)
    return out


_PROBLEM = ("theta", "g", "gamma", "done", "slot", "Yz", "al", "M", "sc", "Bi", "p")


def _rows(st, idx):
    """The state with each cell's rows cut to idx [C, m] (see `_used_rows`)."""
    st = dict(st)
    d1 = st["Zbt"].shape[1]
    st["Zbt"] = st["Zbt"].gather(2, idx[:, None, :].expand(-1, d1, -1))
    st["w"] = st["w"].gather(1, idx)
    if st["p"] is not None:
        p = st["p"]
        st["p"] = p.gather(3, idx[:, None, None, :].expand(-1, p.shape[1], p.shape[2], -1))
    return st


def _select(st, cells, order, width):
    """The state of the first `width` problems in `order` [C, A] (an ordering of each cell's
    slots) of the given cells, with the rows that none of them trains on cut off."""
    ic, ia = cells[:, None], order[cells, :width]
    new = {k: st[k][ic, ia] for k in _PROBLEM}
    new.update({k: [x[ic, ia] for x in st[k]] for k in ("S", "Yh", "rho")})
    for k in ("Zbt", "w", "n_c"):
        new[k] = st[k] if len(cells) == len(st["w"]) else st[k][cells]
    idx = _used_rows(new["w"])
    return new if idx is None else _rows(new, idx)


def _plan(per, A, K, n, d1):
    """How to lay out the live problems, per [C] of them in each cell of a batch A wide:
    None to keep the batch, else a list of (cells, width) groups. The live cells are sorted
    by their count and cut into one group or two, whichever costs least (each group is
    padded to its largest count and costs `GROUP_COST` more); the layout changes when that
    leaves at most `COMPACT` of the batch's cost."""
    unit = K * n * d1
    now = per.numel() * A * unit + GROUP_COST
    counts, cells = torch.sort(per)
    first = int((counts == 0).sum())
    counts, cells = counts[first:], cells[first:]
    top = int(counts[-1])
    best, cut = len(counts) * top * unit + GROUP_COST, len(counts)
    for v in torch.unique(counts)[:-1].tolist():
        m = int((counts <= v).sum())
        cost = (m * v + (len(counts) - m) * top) * unit + 2 * GROUP_COST
        if cost < best:
            best, cut = cost, m
    if best > COMPACT * now:
        return None
    if cut == len(counts):
        return [(torch.sort(cells).values, top)]
    return [(torch.sort(cells[:cut]).values, int(counts[cut - 1])),
            (torch.sort(cells[cut:]).values, top)]


def _run(st, start, out, Q, max_iter, tol, history):
    """L-BFGS iterations `start`.. on the batch in `st` (see `_lbfgs`); each problem's
    solution is written to `out` [C * A, J, d1] when it stops. Returns [] when every
    problem has stopped, else the two groups the batch was cut into, as (state, iteration)
    to go on from (their probabilities, gradient and curvature are those of that iteration).

    Problems converge at very different speeds, and a problem that stops only pads its
    cell's slots (its step is 0). The batch is therefore laid out again whenever that
    leaves at most `COMPACT` of its cost (`_plan`): each cell's live problems move to the
    front, the cells are sorted by how many they have and cut into one or two groups, each
    padded to its own largest count and cut to the rows its cells train on; cells with none
    leave. Each of two groups goes on in a call of its own."""
    resumed = start
    theta, g, gamma, done, slot = (st[k] for k in ("theta", "g", "gamma", "done", "slot"))
    Yz, al, M, sc, Bi, p = (st[k] for k in ("Yz", "al", "M", "sc", "Bi", "p"))
    S, Yh, rho, Zbt, w, n_c = (st[k] for k in ("S", "Yh", "rho", "Zbt", "w", "n_c"))
    J, d1 = theta.shape[2:]
    dt = theta.dtype
    absent = bool((M < 0).any())
    for it in range(start, max_iter):
        if (it % EXACT == 0 and it != resumed) or p is None:   # exact (the update drifts)
            p = _probabilities(theta, Zbt, Q, M, w)
            g = _gradient(p, theta, Zbt, Yz, al, n_c, Q)
        if (it % REFRESH == 0 and it != resumed) or sc is None:
            sc, Bi = _curvature(p, Zbt, w, n_c, al, Q)
        done |= g.abs().amax((2, 3)) < tol
        per = (~done).sum(1)
        if int(per.max()) == 0:
            break
        groups = _plan(per, theta.shape[1], J + 1, Zbt.shape[2], d1)
        if groups is not None:
            out.view(-1, J, d1)[slot[done]] = theta[done]
            order = torch.sort(done.to(torch.int8), dim=1, stable=True).indices
            st = dict(theta=theta, g=g, gamma=gamma, done=done, slot=slot, Yz=Yz, al=al, M=M,
                      sc=sc, Bi=Bi, p=p, S=S, Yh=Yh, rho=rho, Zbt=Zbt, w=w, n_c=n_c)
            if len(groups) > 1:
                return [(_select(st, cells, order, width), it) for cells, width in groups]
            st = _select(st, groups[0][0], order, groups[0][1])
            theta, g, gamma, done, slot = (st[k] for k in ("theta", "g", "gamma", "done",
                                                           "slot"))
            Yz, al, M, sc, Bi, p = (st[k] for k in ("Yz", "al", "M", "sc", "Bi", "p"))
            S, Yh, rho, Zbt, w, n_c = (st[k] for k in ("S", "Yh", "rho", "Zbt", "w", "n_c"))
            absent = bool((M < 0).any())
        # two-loop recursion, H0 = gamma * (Kronecker-factored inverse curvature)
        q = g.clone()
        coeffs = []
        for s, yy, r in zip(reversed(S), reversed(Yh), reversed(rho)):
            a = r * (s * q).sum((2, 3))
            q -= a[..., None, None] * yy
            coeffs.append(a)
        z = gamma[..., None, None] * torch.matmul(Bi, q * sc)
        for s, yy, r, a in zip(S, Yh, rho, reversed(coeffs)):
            beta = r * (yy * z).sum((2, 3))
            z += s * (a - beta)[..., None, None]
        direction = -z
        slope = (g * direction).sum((2, 3))
        bad = (slope >= 0)[..., None, None]
        direction = torch.where(bad, -g, direction) * (~done)[..., None, None]
        slope = torch.where(bad[..., 0, 0], -(g * g).sum((2, 3)), slope) * ~done
        # the objective along theta + t * direction, from the logits' change t * D (the classes
        # a problem lacks do not move)
        D = _logits(direction, Zbt, Q, (M == 0).to(dt)[..., None] if absent else None)
        # the true classes' logits move by sum_i D_{i, y_i}: the direction times Yz
        dy = (torch.matmul(Q, direction) * Yz).sum((2, 3))
        pen1 = (theta[..., :-1] * direction[..., :-1]).sum((2, 3))
        pen2 = (direction[..., :-1] ** 2).sum((2, 3))
        sp, change, safe = _full_step(D, p)
        df = (change.sum(-1) - dy + al * (pen1 + 0.5 * pen2)) / n_c[:, None]
        # a problem with a row whose change is not safe here (see `_full_step`) has it
        # computed again, in the log domain (`_change`), with the problems that backtrack
        unsafe = ~safe.all(-1) | ~torch.isfinite(df)
        pending = ~done & (unsafe | ~(df <= 1e-4 * slope))
        t = (~done).to(dt)
        sub = None
        if bool(pending.any()):          # backtrack on the problems that need it only
            ci, ai = torch.nonzero(pending, as_tuple=True)
            sub = (D[ci, ai], p[ci, ai], w[ci])
            sl, p1, p2, c_ = slope[ci, ai], pen1[ci, ai], pen2[ci, ai], n_c[ci]
            a_, dy_ = al[ci, ai], dy[ci, ai]
            tt = torch.ones_like(sl)
            pnew = sub[1]
            left = torch.ones_like(tt, dtype=torch.bool)
            fd = df[ci, ai]
            # the full step is tried again (in the log domain) where its change was not safe;
            # where it was, its decrease stands, and backtracking starts at once
            for trial in range(0 if bool(unsafe[ci, ai].any()) else 1, 21):
                if trial:
                    # the minimum of the quadratic through 0, slope and df, in [t/10, t/2]
                    fit = -sl * tt * tt / (2 * (fd - sl * tt)).clamp(min=1e-30)
                    tt = torch.where(left, torch.minimum(torch.maximum(fit, tt / 10), tt / 2),
                                     tt)
                c2, p_ = _change(sub[0], sub[1], sub[2], tt)
                fd = (c2.sum(-1) - tt * dy_ + a_ * (tt * p1 + 0.5 * tt * tt * p2)) / c_
                fd = torch.nan_to_num(fd, nan=float("inf"))
                ok = left & (fd <= 1e-4 * tt * sl)
                pnew = torch.where(ok[:, None, None], p_, pnew)
                left &= ~ok
                if not bool(left.any()):
                    break
            t[ci, ai] = torch.where(left, torch.zeros_like(tt), tt)
            pending[ci, ai] = left
        done |= pending          # no step lowers the objective: converged
        t = torch.where(done, torch.zeros_like(t), t)
        step = t[..., None, None] * direction
        theta = theta + step
        # the probabilities after the step (the problems that backtracked: from `_change`)
        p = _moved(D, p, sp)
        if sub is not None:
            p[ci, ai] = pnew
        g_new = _gradient(p, theta, Zbt, Yz, al, n_c, Q)
        dg = g_new - g
        g = g_new
        sy = (step * dg).sum((2, 3))
        valid = sy > 1e-12 * (step * step).sum((2, 3)).sqrt() * (dg * dg).sum((2, 3)).sqrt()
        S.append(step)
        Yh.append(dg)
        rho.append(torch.where(valid, 1.0 / sy.clamp(min=1e-30), torch.zeros_like(sy)))
        Hy = torch.matmul(Bi, dg * sc)
        gamma = torch.where(valid & (sy > 0), sy / (dg * Hy).sum((2, 3)).clamp(min=1e-30), gamma)
        if len(S) > history:
            S.pop(0), Yh.pop(0), rho.pop(0)
    out.view(-1, J, d1)[slot.flatten()] = theta.reshape(-1, J, d1)
    return []
