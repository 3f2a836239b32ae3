"""The graph editor the load-time rewrites share (fuse.py, qdq.py): who reads and who
produces each value, kept current as nodes are replaced or removed."""


class Rewriter:
    def __init__(self, graph, backend="numpy"):
        self.g = graph
        self.backend = backend      # where values computed at load are computed
        self.outputs = {o.name for o in graph.outputs}
        # A rewrite marks nodes removed / replaced and updates cons / prod for just those
        # nodes; g.nodes is rebuilt once per pass (compact). Editing the list and rebuilding
        # the maps per rewrite made loading quadratic: 4000 fused SiLUs took 80 s.
        self.removed = set()
        self.swap = {}           # replaced node -> the node taking its place
        self.refresh()

    def refresh(self):
        self.cons = self.g.consumers()
        self.prod = self.g.producers()

    def forget(self, nodes):
        """Take nodes out of cons / prod (before they change or go)."""
        for n in nodes:
            for i in set(n.inputs):
                if i in self.cons:
                    self.cons[i] = [c for c in self.cons[i] if c is not n]
            for o in n.outputs:
                if o and self.prod.get(o) is n:
                    del self.prod[o]

    def learn(self, nodes):
        """Put new or changed nodes into cons / prod."""
        for n in nodes:
            for i in n.inputs:
                if i:
                    self.cons.setdefault(i, []).append(n)
            for o in n.outputs:
                if o:
                    self.prod[o] = n

    def compact(self):
        """Apply this pass's replacements and removals to g.nodes in one sweep."""
        nodes = []
        for n in self.g.nodes:
            while n in self.swap:
                n = self.swap[n]
            if n not in self.removed:
                nodes.append(n)
        self.g.nodes = nodes
        self.swap.clear()

    def only_reader(self, value):
        """The single node reading ``value`` (None if 0 or >1 readers, or a graph output)."""
        if value in self.outputs:
            return None
        c = self.cons.get(value, [])
        return c[0] if len(c) == 1 else None

    def const(self, name):
        return self.g.consts.get(name) if name else None

    def scalar(self, name):
        v = self.const(name)
        if v is None or v.size != 1 or v.dtype.kind not in "fiu":
            return None
        return float(v.reshape(-1)[0])

    def other_input(self, node, value):
        """For a binary node reading ``value``: its other input name (None if both are it)."""
        a, b = node.inputs[:2]
        if a == value and b != value:
            return b
        if b == value and a != value:
            return a
        return None

    def absorb(self, keep, gone):
        """``keep`` takes over ``gone``'s (its only reader's) output; ``gone`` is removed."""
        self.forget([keep, gone])
        keep.outputs = list(gone.outputs[:1])
        self.learn([keep])
        self.removed.add(gone)


def replace(rw, remove, new_node, at):
    """``new_node`` takes ``at``'s place in the order; the other ``remove`` nodes go."""
    rw.forget(remove)
    rw.learn([new_node])
    rw.removed.update(remove)
    rw.swap[at] = new_node


def near(v, want):
    return v is not None and abs(v - want) <= 1e-6 * max(1.0, abs(want))
