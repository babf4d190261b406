"""Circuit discovery: the subgraph that computes an answer, and how faithful it is.

    bridge, task = interp.load_model("quadratic-small")
    pairs = circuits.corrupt_pairs(bridge, task, n=32)
    res = discover(bridge, task, pairs, method="eap-ig", positions="field")
    res.frame()             # every edge with its score (metric units), rank, in_circuit
    res.faithfulness()      # f at 0.1 ... 100% of the edges, measured by running; res.cpr, res.cmd
    res.circuit(50)         # the top-50 edges, pruned, with f and its interval
    res.figure()            # the circuit as a layered graph

The graph (`model`, `graph`): senders are the embeddings, every attention head and every
MLP; receivers every head's query, key and value input, every MLP input and the logits (T5:
encoder self-attention, decoder self-attention and cross-attention, whose keys and values
receive from the encoder). Edge scores (`scores`): `exact` edge patching (the oracle), `eap`,
`eap-ig`. Circuits and faithfulness (`faithfulness`): top-k with pruning, or the smallest
reaching a target; f, CPR and CMD as MIB defines them; `knockout` cuts a set of a circuit's
edges against control sets of as many of its other edges. `compare.agreement` scores the
approximate methods against exact per component type. See docs/circuits.md.
"""

from circuits.discovery.compare import agreement, agreement_by_size
from circuits.discovery.faithfulness import PERCENTS, areas, curve, knockout
from circuits.discovery.graph import POSITIONS, EdgeGraph
from circuits.discovery.model import GraphModel
from circuits.discovery.result import Circuit, DiscoveryResult, discover, labels_from_table
from circuits.discovery.scores import ABLATIONS, METHODS

__all__ = ["discover", "DiscoveryResult", "Circuit", "GraphModel", "EdgeGraph", "agreement",
           "agreement_by_size",
           "curve", "areas", "knockout", "labels_from_table", "METHODS", "POSITIONS", "ABLATIONS",
           "PERCENTS"]
