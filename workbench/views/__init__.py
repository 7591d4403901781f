"""Figures: pure functions of result objects (plotly figures; graphviz SVG for the fusion graph)."""
from .figures import (drift_figure, layer_latency_comparison, layer_latency_figure, match_layers, summary_figure,
                      summary_table, tradeoff_figure)
from .fusion import FusionView, fusion_graph
from .netron import open_in_netron, stop_all

__all__ = ["FusionView", "drift_figure", "fusion_graph", "layer_latency_comparison", "layer_latency_figure",
           "match_layers", "open_in_netron", "stop_all", "summary_figure", "summary_table", "tradeoff_figure"]
