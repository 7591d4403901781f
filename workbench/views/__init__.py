"""Figures and tables: pure functions of result objects (plotly figures; graphviz SVG for the fusion graph)."""
from .figures import (SQNR_COSINE_EXPLANATION, config_colors, drift_figure, layer_latency_comparison,
                      layer_latency_figure, match_layers, summary_table, tradeoff_figure)
from .fusion import FusionView, fusion_graph, fusion_pages_html
from .netron import open_in_netron, stop_all
from .tables import html_table, summary_html

__all__ = ["FusionView", "SQNR_COSINE_EXPLANATION", "config_colors", "drift_figure", "fusion_graph", "fusion_pages_html", "html_table",
           "layer_latency_comparison", "layer_latency_figure", "match_layers", "open_in_netron", "stop_all",
           "summary_html", "summary_table", "tradeoff_figure"]
