"""How the widgets put plotly figures on the page so that they fill their panel's width (plotly 6 sizes a
FigureWidget before it is attached to the page and keeps 700 px: plotly.py#5208)."""
from __future__ import annotations


def figure_output(figure):
    """An Output widget showing `figure` through plotly's JupyterLab renderer: drawn when shown, it follows its
    panel's width (a FigureWidget drawn in a hidden tab keeps 700 px)."""
    import ipywidgets as widgets
    import plotly.io as pio

    out = widgets.Output(layout=widgets.Layout(width="100%"))
    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(figure.to_dict())
    # responsive: plotly.js follows window resizes itself (Voila's app page sends the renderer no resize message)
    bundle["application/vnd.plotly.v1+json"].setdefault("config", {})["responsive"] = True
    out.outputs = ({"output_type": "display_data", "metadata": {}, "data": bundle},)
    return out


def figure_widget(figure):
    """A FigureWidget (for click events) that follows window resizes; put it on the page, then `fit_to_panel`."""
    import plotly.graph_objects as go

    widget = go.FigureWidget(figure)
    widget._config = {"responsive": True}
    return widget


def fit_to_panel(widget) -> None:
    """Make a FigureWidget just put on the page measure its container: a relayout that reaches the page after it."""
    widget.layout.autosize = False
    widget.layout.autosize = True


def fit_after_display(widget) -> None:
    """`fit_to_panel` once the running notebook cell has finished (its display output is then on the page)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def fit() -> None:
        shell.events.unregister("post_execute", fit)
        fit_to_panel(widget)

    shell.events.register("post_execute", fit)
