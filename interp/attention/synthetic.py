"""Synthetic attention heads with known classes, to validate the taxonomy.

Each synthetic head is a small batch of prompts of different lengths (padded, with a mask),
causal or bidirectional. A prompt is `<bos>` then runs of one field's digits (`a_digit`,
`b_sign`, `b_digit` ... : group `a`, `b` ...) separated by literals (`op`, `;`, `(`), with
special roles (`=`, `x`, `^`) in its first third. Rows mix a class's ideal pattern with random
noise:

- `sharp_diagonal`: all mass at one offset (0, 1, 2; or -1 when bidirectional);
- `blurred_diagonal`: a Gaussian band around an offset (sigma 1.2 to 1.8);
- `vertical`: mass on the positions of one or two special roles (`=`, `x`, `^`, `<bos>`);
- `sparse_block`: uniform attention within the query's own segment (segments of 4 to 9);
- `routed`: the queries of one field read the keys of one or two other fields (placed before
  it), every other query is random;
- `broad`: rows close to uniform (log-normal weights, sigma 0.2-0.5; Clark et al. 2019's
  broad heads);
- `heterogeneous`: random peaked rows with no structure;
- `vertical+sharp_diagonal`: half on a special role, half on the previous token.

Near-misses, whose truth is `heterogeneous` (no label may fire), each on a random peaked
background:
- `weak_stripe`: special roles that fill a third of the positions receive ~45% of the
  attention: above the vertical share, but at a low lift over the uniform head (little
  noise, so that the background stays peaked);
- `chance_route`: one field's queries read another field at about chance (lift ~1.3);
- `peaked_broad`: rows softly peaked (log-normal weights, sigma 1.0-1.3), entropy ~0.8 of the
  uniform head's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

CLASSES = ("sharp_diagonal", "blurred_diagonal", "vertical", "sparse_block", "routed", "broad",
           "heterogeneous", "vertical+sharp_diagonal")
NEAR_MISSES = ("weak_stripe", "chance_route", "peaked_broad")
FIELDS = ("a", "b", "c", "d", "e", "f", "g")
LITERALS = ("op", ";", "(")
SPECIAL = ("=", "x", "^", "<bos>")


@dataclass
class SyntheticHead:
    pattern: torch.Tensor   # [1, batch, 1, query, key]
    mask: torch.Tensor      # [batch, query, key]
    roles: list[list[str]]
    segments: torch.Tensor  # [batch, pos]
    causal: bool
    truth: set[str]


def _allowed(T: int, causal: bool) -> torch.Tensor:
    m = torch.ones(T, T, dtype=torch.bool)
    return m.tril() if causal else m


def _normalise(rows: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    rows = rows * allowed
    s = rows.sum(-1, keepdim=True)
    fallback = allowed.float() / allowed.float().sum(-1, keepdim=True)
    return torch.where(s > 0, rows / s.clamp_min(1e-12), fallback)


def _run(rng: random.Random, field: str) -> list[str]:
    run = [f"{field}_digit"] * rng.randint(1, 4)
    if rng.random() < 0.3:
        run = [f"{field}_sign"] + run
    return run


def _roles(rng: random.Random, n: int, specials: list[str], q_field: str | None,
           k_fields: list[str], dense_specials: bool) -> list[str]:
    """One prompt's roles: <bos>, field runs and literals; the key fields' runs early, the
    query field's run in the second half (so causal queries can read them)."""
    others = [f for f in FIELDS if f != q_field and f not in k_fields]
    body: list[str] = []
    for f in k_fields:
        body += _run(rng, f) + [rng.choice(LITERALS)]
    while len(body) < n - 1:
        body += _run(rng, rng.choice(others)) + [rng.choice(LITERALS)]
    r = ["<bos>"] + body[: n - 1]
    if q_field is not None:
        at = rng.randint(n // 2, max(n // 2, n - 5))
        run = [f"{q_field}_digit"] * rng.randint(3, 4)
        r[at: at + len(run)] = run
        r = r[:n]
    for s in specials:
        if s != "<bos>":
            for _ in range(rng.randint(1, 2)):
                r[rng.randint(1, max(1, n // 3))] = s
    if dense_specials:          # a third of the positions: the uniform head's share is high
        for i in rng.sample(range(1, n), n // 3):
            r[i] = rng.choice([s for s in specials if s != "<bos>"] or ["="])
    return r


def make_head(cls: str, rng: random.Random, causal: bool, batch: int = 6) -> SyntheticHead:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    lengths = [rng.randint(14, 40) for _ in range(batch)]
    T = max(lengths)
    offset = rng.choice([0, 1, 2] + ([] if causal else [-1]))
    sigma = rng.uniform(1.2, 1.8)
    centre = rng.choice([2, 3] if causal else [-1, 0, 1])  # causal: look back a few
    specials = rng.sample([s for s in SPECIAL if s != "<bos>"], rng.randint(1, 2))
    if rng.random() < 0.25 and cls != "weak_stripe":
        specials = ["<bos>"]
    fields = rng.sample(FIELDS, 3)
    q_field, k_fields = fields[0], fields[1: 1 + rng.randint(1, 2)]
    routes = cls in ("routed", "chance_route")
    noise = rng.uniform(0.02, 0.05 if cls == "weak_stripe" else 0.2)
    # log-normal row weights: broad heads spread 0.2-0.5, slightly peaked ones 1.0-1.3
    spread = rng.uniform(1.0, 1.3) if cls == "peaked_broad" else rng.uniform(0.2, 0.5)
    P = torch.zeros(1, batch, 1, T, T)
    mask = torch.zeros(batch, T, T, dtype=torch.bool)
    segs = torch.full((batch, T), -1, dtype=torch.long)
    roles = []
    for b, n in enumerate(lengths):
        allowed = _allowed(n, causal)
        mask[b, :n, :n] = allowed
        r = _roles(rng, n, specials, q_field if routes else None, k_fields if routes else [],
                   cls == "weak_stripe")
        roles.append(r)
        seg, pos, sid = [], 0, 0
        while pos < n:
            ln = rng.randint(4, 9)
            seg += [sid] * min(ln, n - pos)
            pos += ln
            sid += 1
        segs[b, :n] = torch.tensor(seg)
        q = torch.arange(n)[:, None].float()
        k = torch.arange(n)[None, :].float()
        special_keys = torch.tensor([x in specials for x in r])[None, :].float().expand(n, n)
        peaked = _normalise(torch.rand(n, n, generator=g) ** 4, allowed)
        if cls == "sharp_diagonal":
            ideal = (q - k == offset).float()
        elif cls == "blurred_diagonal":
            ideal = torch.exp(-((q - k - centre) ** 2) / (2 * sigma ** 2))
        elif cls == "vertical":
            ideal = special_keys.clone()
        elif cls == "sparse_block":
            sg = segs[b, :n]
            ideal = (sg[:, None] == sg[None, :]).float()
        elif cls in ("heterogeneous", "peaked_broad", "broad"):
            ideal = {"heterogeneous": peaked,
                     "peaked_broad": torch.exp(spread * torch.randn(n, n, generator=g)),
                     "broad": torch.exp(spread * torch.randn(n, n, generator=g))}[cls]
        elif cls == "weak_stripe":
            ideal = 0.3 * _normalise(special_keys, allowed) + 0.7 * peaked
        elif routes:
            is_q = torch.tensor([x.startswith(q_field + "_") for x in r])[:, None]
            to_k = torch.tensor([x.split("_")[0] in k_fields and x != "<bos>" for x in r])
            read = _normalise(to_k[None, :].float().expand(n, n), allowed)
            if cls == "chance_route":   # about chance: a little above the uniform head
                read = 0.25 * read + 0.75 * _normalise(torch.ones(n, n), allowed)
            ideal = torch.where(is_q, read, peaked)
        else:  # vertical + sharp_diagonal (previous token)
            prev = _normalise((q - k == 1).float(), allowed)
            ideal = 0.5 * _normalise(special_keys, allowed) + 0.5 * prev
        ideal = _normalise(ideal, allowed)
        rand = _normalise(torch.rand(n, n, generator=g), allowed)
        if cls in ("broad", "peaked_broad"):
            P[0, b, 0, :n, :n] = ideal            # their noise is the class itself
        else:
            P[0, b, 0, :n, :n] = (1 - noise) * ideal + noise * rand
    truth = ({"sharp_diagonal", "vertical"} if cls == "vertical+sharp_diagonal"
             else {"heterogeneous"} if cls in NEAR_MISSES else {cls})
    return SyntheticHead(P, mask, roles, segs, causal, truth)


def make_dataset(n: int, seed: int, near_misses: bool = True) -> list[SyntheticHead]:
    """n synthetic heads, the classes (and near-misses) in turn, half causal and half
    bidirectional."""
    kinds = CLASSES + (NEAR_MISSES if near_misses else ())
    rng = random.Random(seed)
    return [make_head(kinds[i % len(kinds)], rng, causal=bool((i // len(kinds)) % 2))
            for i in range(n)]
