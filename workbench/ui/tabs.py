"""Explorer tabs as a small protocol: a tab has a `title`, a `widget`, and `show(context)`, called with every
result the explorer shows and with `result=None` when there is none to show (a model switch, a computation
started, an error). Tabs use the explorer's public API only (`explorer.selection()`, `explorer.plan()`,
`explorer.request()`, `explorer.scheduler`, `explorer.run_options`, its widgets).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..results import RunResult
    from ..session import Workbench

SEARCH = "search"  # scheduler group of the Mixed precision tab's search (a selection does not supersede it)
SPINNER = "<span class='workbench-spinner'></span>"  # a moving busy indicator (styled by the explorer)


@dataclass(frozen=True)
class TabContext:
    """What a tab is shown: the explorer, the selected model and engine, and (once computed) the session and result
    on display; `result` is None while nothing is (a model switch, an error)."""

    explorer: Any
    model: str
    backend: str
    session: Workbench | None = None
    result: RunResult | None = None


class Tab(Protocol):
    title: str
    widget: Any

    def show(self, context: TabContext) -> None: ...


class StaticTab:
    """A tab whose widget the explorer (or your code) fills itself; `show` does nothing."""

    def __init__(self, title: str, widget) -> None:
        self.title, self.widget = title, widget

    def show(self, context: TabContext) -> None:
        pass


class DeferredTab:
    """A tab built with the first work, after the panel is on screen (its imports are heavy): `build(explorer)`
    returns the real tab, whose widget then fills this one's container."""

    def __init__(self, title: str, build: Callable[[Any], Tab]) -> None:
        import ipywidgets as widgets

        self.title = title
        self.widget = widgets.VBox(layout=widgets.Layout(width="100%"))
        self.tab: Tab | None = None
        self._build = build

    def ready(self, explorer) -> Tab:
        """The real tab (built on first use)."""
        if self.tab is None:
            self.tab = self._build(explorer)
            self.widget.children = (self.tab.widget,)
        return self.tab

    def show(self, context: TabContext) -> None:
        self.ready(context.explorer).show(context)
