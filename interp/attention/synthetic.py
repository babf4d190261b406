"""Synthetic attention heads with known classes, to validate the taxonomy.

Each synthetic head is a small batch of prompts of different lengths (padded, with a mask),
causal or bidirectional, whose rows mix a class's ideal pattern with random noise:

- `sharp_diagonal`: all mass at one offset (0, 1, 2; or -1 when bidirectional);
- `blurred_diagonal`: a Gaussian band around an offset (sigma 1.2 to 1.8);
- `vertical`: mass on the positions of one or two special roles (`=`, `x`, `^`, `<bos>`);
- `sparse_block`: uniform attention within the query's own segment (segments of 4 to 9);
- `heterogeneous`: random rows with no structure;
- `vertical+sharp_diagonal`: half on a special role, half on the previous token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

CLASSES = ("sharp_diagonal", "blurred_diagonal", "vertical", "sparse_block", "heterogeneous",
           "vertical+sharp_diagonal")
ORDINARY = ("d0", "d1", "d2", "d3", "d4", "d5", "op", "sign")
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


def make_head(cls: str, rng: random.Random, causal: bool, batch: int = 4) -> SyntheticHead:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    lengths = [rng.randint(14, 40) for _ in range(batch)]
    T = max(lengths)
    offset = rng.choice([0, 1, 2] + ([] if causal else [-1]))
    sigma = rng.uniform(1.2, 1.8)
    centre = rng.choice([2, 3] if causal else [-1, 0, 1])  # causal: look back a few
    specials = rng.sample([s for s in SPECIAL if s != "<bos>"], rng.randint(1, 2))
    if rng.random() < 0.25:
        specials = ["<bos>"]
    noise = rng.uniform(0.02, 0.2)
    P = torch.zeros(1, batch, 1, T, T)
    mask = torch.zeros(batch, T, T, dtype=torch.bool)
    segs = torch.full((batch, T), -1, dtype=torch.long)
    roles = []
    for b, n in enumerate(lengths):
        allowed = _allowed(n, causal)
        mask[b, :n, :n] = allowed
        r = [rng.choice(ORDINARY) for _ in range(n)]
        r[0] = "<bos>"
        for s in specials:
            if s != "<bos>":
                for _ in range(rng.randint(1, 2)):
                    r[rng.randint(1, max(1, n // 3))] = s
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
        if cls == "sharp_diagonal":
            ideal = (q - k == offset).float()
        elif cls == "blurred_diagonal":
            ideal = torch.exp(-((q - k - centre) ** 2) / (2 * sigma ** 2))
        elif cls == "vertical":
            ideal = special_keys.clone()
        elif cls == "sparse_block":
            sg = segs[b, :n]
            ideal = (sg[:, None] == sg[None, :]).float()
        elif cls == "heterogeneous":
            ideal = torch.rand(n, n, generator=g) ** 4
        else:  # vertical + sharp_diagonal (previous token)
            prev = _normalise((q - k == 1).float(), allowed)
            ideal = 0.5 * _normalise(special_keys, allowed) + 0.5 * prev
        ideal = _normalise(ideal, allowed)
        rand = _normalise(torch.rand(n, n, generator=g), allowed)
        P[0, b, 0, :n, :n] = (1 - noise) * ideal + noise * rand
    truth = {"sharp_diagonal", "vertical"} if cls == "vertical+sharp_diagonal" else {cls}
    return SyntheticHead(P, mask, roles, segs, causal, truth)


def make_dataset(n: int, seed: int) -> list[SyntheticHead]:
    """n synthetic heads, classes in turn, half causal and half bidirectional."""
    rng = random.Random(seed)
    return [make_head(CLASSES[i % len(CLASSES)], rng, causal=bool((i // len(CLASSES)) % 2))
            for i in range(n)]
