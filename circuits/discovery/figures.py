"""The figures of a discovered circuit: the layered circuit graph and the faithfulness
curve (pure: the result's frames in, plotly figure out). They are drawn by
`interp.viz.circuit_figures` (where the discover report's page can reach them, since `interp`
never imports `circuits`); this module is their home for the circuit code.

    circuit_figure(res.frame(), res.nodes(), title="", max_edges=60)
    faithfulness_figure({method: res.faithfulness()}, title="", areas={method: (cpr, cmd)})
    result_figures(res)          # both, for one result
"""

from interp.viz.circuit_figures import (DASHES, INPUT_NAMES, METHOD_COLOURS, NODE_STYLE,
                                        PERCENT_TICKS, SIGN_COLOURS, circuit_figure,
                                        faithfulness_figure, layout, merge_groups,
                                        method_colours, parse_node, result_figures,
                                        split_receiver)

__all__ = ["circuit_figure", "faithfulness_figure", "result_figures", "layout", "parse_node",
           "split_receiver", "merge_groups", "method_colours", "SIGN_COLOURS", "DASHES",
           "INPUT_NAMES", "NODE_STYLE", "METHOD_COLOURS", "PERCENT_TICKS"]
