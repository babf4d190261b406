"""Run by tests/test_distributed.py, once per process under torchrun (or once alone): exact
patching of every cell of a few sites on a checkpoint, and exact edge patching (circuit
discovery's oracle) when `edges` is among them, and a probe grid (every layer and input
position, in chunks of 3 cells) when `probes` is; the main process saves the results as
safetensors. argv: CKPT OUT SITE[,SITE...]"""

import sys

import torch
from safetensors.torch import save_file

import interp
import interp.distributed as dist
from circuits.discovery import EdgeGraph, GraphModel
from circuits.discovery.scores import exact, prepare
from circuits.patching import corrupt_pairs, patch

torch.set_num_threads(1)
ckpt, out, sites = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
bridge, task = interp.load_model(ckpt)
pairs = corrupt_pairs(bridge, task, n=6, seed=0)
res = {}
for s in sites:
    if s == "edges":          # every edge, batches of 8 edges shared out
        gm = GraphModel(bridge, {k: v.shape[1] for k, v in pairs.clean.items()})
        su = prepare(gm, EdgeGraph(gm, pairs.roles, "none", pairs.answer_pos), pairs)
        res[s] = exact(su, chunk=8).contiguous()
    elif s == "probes":       # chunks of 3 cells shared out
        import probes
        import probes.fitting

        acts = probes.collect(bridge, task, task.generate(40, seed=1), sites=("resid_pre",),
                              positions="input")
        probes.fitting.CELL_BUDGET = 3 * acts.n * acts.d_model
        fit = probes.fit(acts, "D_sign", n_boot=20)
        frame = fit.frame()
        res[s] = torch.tensor(frame[["layer", "score", "control", "score_lo"]].to_numpy(
            dtype="float64")).nan_to_num(-9.0).contiguous()   # NaN: no control
        res[s + ".weights"] = torch.cat([w.flatten().double() for w, _ in fit.weights.values()])
        keys = sorted(fit.weights)
        res[s + ".order"] = torch.tensor([keys.index(k) for k in fit.weights])
    else:
        res[s] = patch(bridge, pairs, s, max_rows=12).per_example.contiguous()
if dist.is_main():
    save_file(res, out, metadata={"size": str(dist.size())})
