"""One index over an ONNX graph: nodes by name, the producer and consumers of every tensor, topological order.

Built once per graph (like ONNX Runtime quantisation's `ONNXModel` indexes) and shared by every transform and view
that walks a graph, instead of each building its own producer/consumer maps. Nodes are addressed by their position
in `graph.node`; tensors by name (onnx-graphsurgeon's Node/Tensor links, without copying the graph).
"""
from __future__ import annotations

from collections import deque
from functools import cached_property

import onnx


class GraphIndex:
    """Read-only links over `graph.node`; rebuild it after changing the graph."""

    def __init__(self, graph: onnx.GraphProto | onnx.ModelProto) -> None:
        self.graph = graph.graph if isinstance(graph, onnx.ModelProto) else graph
        self.nodes: list[onnx.NodeProto] = list(self.graph.node)
        self.names: list[str] = [node.name for node in self.nodes]
        self.initializers: dict[str, onnx.TensorProto] = {init.name: init for init in self.graph.initializer}
        self.producer_index: dict[str, int] = {}
        self.consumer_indices: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for tensor in node.output:
                if tensor:
                    self.producer_index[tensor] = i
            for tensor in dict.fromkeys(node.input):
                if tensor:
                    self.consumer_indices.setdefault(tensor, []).append(i)
        self._by_name = {name: i for i, name in enumerate(self.names) if name}

    # ---- tensors -------------------------------------------------------------------------------
    def producer(self, tensor: str) -> onnx.NodeProto | None:
        """The node writing `tensor` (None for graph inputs, initialisers and unknown names)."""
        i = self.producer_index.get(tensor)
        return None if i is None else self.nodes[i]

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        """The nodes reading `tensor`, in graph order."""
        return [self.nodes[i] for i in self.consumer_indices.get(tensor, ())]

    @cached_property
    def graph_inputs(self) -> list[str]:
        """Names of the graph's runtime inputs (initialisers listed as inputs excluded)."""
        return [v.name for v in self.graph.input if v.name not in self.initializers]

    @cached_property
    def graph_outputs(self) -> list[str]:
        return [v.name for v in self.graph.output]

    # ---- nodes ---------------------------------------------------------------------------------
    def index(self, name: str) -> int:
        """Position of the node called `name` (KeyError if there is none)."""
        return self._by_name[name]

    def node(self, name: str) -> onnx.NodeProto:
        return self.nodes[self._by_name[name]]

    def predecessors(self, i: int) -> list[int]:
        """Nodes that feed node `i`, without repeats."""
        found = (self.producer_index.get(t) for t in self.nodes[i].input if t)
        return list(dict.fromkeys(p for p in found if p is not None))

    def successors(self, i: int) -> list[int]:
        """Nodes fed by node `i`, without repeats."""
        return list(dict.fromkeys(c for t in self.nodes[i].output for c in self.consumer_indices.get(t, ())))

    def topological_order(self) -> list[int]:
        """Node positions with every producer before its consumers (graph order where it already is one)."""
        pending = [len(self.predecessors(i)) for i in range(len(self.nodes))]
        ready = deque(i for i, n in enumerate(pending) if n == 0)
        order: list[int] = []
        while ready:
            i = ready.popleft()
            order.append(i)
            for j in self.successors(i):
                pending[j] -= 1
                if pending[j] == 0:
                    ready.append(j)
        if len(order) != len(self.nodes):  # a cycle (invalid ONNX): keep the rest in file order
            seen = set(order)
            order.extend(i for i in range(len(self.nodes)) if i not in seen)
        return order

    def nearest(self, start: int, accept, *, downstream: bool = True) -> int | None:
        """Breadth-first from node `start` (excluded) along consumers (or producers): the first node `accept`s."""
        step = self.successors if downstream else self.predecessors
        queue, seen = deque(step(start)), {start}
        while queue:
            i = queue.popleft()
            if i in seen:
                continue
            seen.add(i)
            if accept(i):
                return i
            queue.extend(step(i))
        return None
