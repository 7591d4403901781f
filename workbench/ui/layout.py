"""The explorer's page layout for a class: from 1024x768 with JupyterLab's file browser open to 1920 wide.

CSS only (one <style> the explorer puts on the page): tab titles stay whole (the tab row wraps), figures keep a
minimum width and scroll sideways inside their panel when it is narrower, nothing pushes the page sideways.
"""
from __future__ import annotations

# Narrower than this, a figure's plot (beside its axis labels and legend) would shrink below ~300 px: the figure
# keeps this width and its panel scrolls sideways instead.
MIN_FIGURE_PX = 560

LAYOUT_STYLE = (
    "<style>"
    # tab titles: whole, on as many rows as they need
    ".workbench-explorer .jupyter-widget-tab>.lm-TabBar>.lm-TabBar-content{flex-wrap:wrap}"
    ".workbench-explorer .jupyter-widget-tab>.lm-TabBar .lm-TabBar-tab{flex:0 0 auto;max-width:none}"
    # every panel: never wider than the explorer; what is wider scrolls inside it
    ".workbench-explorer .widget-tab-contents{min-width:0;overflow-x:auto}"
    ".workbench-explorer .widget-tab-contents>.lm-Widget{min-width:0;overflow-x:auto}"
    f".workbench-explorer .js-plotly-plot{{min-width:{MIN_FIGURE_PX}px}}"
    ".workbench-explorer .widget-output{min-width:0;max-width:100%}"
    ".workbench-explorer .widget-hbox{flex-wrap:wrap}"
    # HTML panels (summary, fusion, notes) take their panel's width; their own scrollers do the rest
    ".workbench-explorer .widget-html{min-width:0;max-width:100%}"
    ".workbench-explorer .widget-html>.widget-html-content{flex:1 1 auto;min-width:0;max-width:100%}"
    "</style>")
