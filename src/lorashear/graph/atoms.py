"""Channel atoms: one integer id per index of every (tensor, dim) the propagation touches.

Operators relate atoms in two ways. *Equality* (an elementwise add, a matmul contraction, a
linear's input columns and the tensor they read) says two indices must be removed together.
*Products* (a reshape that splits a dim into (heads, head_dim), or repeat_kv's expand+reshape)
say a flat index is the pair (a, b) of its factors' indices: removing a whole factor index
removes all its members. Which factors are "closed" that way decides the granularity of the
groups (heads, query heads, whole blocks); components are computed once per granularity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Granularities of the closure over products (see `AtomTable.components`).
HEADS = "heads"  # close every factor but the innermost: attention heads / KV groups
QUERY_HEADS = "query_heads"  # close repeat (broadcast) factors instead: the i-th query head of each KV group
BLOCKS = "blocks"  # close every non-broadcast factor: a layer's whole attention


@dataclass
class Product:
    """`flat` (an atom array) indexes the row-major product of `factors` (atom arrays)."""

    flat: np.ndarray
    factors: list[np.ndarray]
    broadcast: list[bool]  # factor created by expanding a size-1 dim (repeat_kv's n_rep)


@dataclass
class AtomTable:
    """Allocates atoms and records the relations between them."""

    size: int = 0
    _edges_a: list[np.ndarray] = field(default_factory=list)
    _edges_b: list[np.ndarray] = field(default_factory=list)
    products: list[Product] = field(default_factory=list)
    broadcast_atoms: set[int] = field(default_factory=set)

    def new(self, n: int, broadcast: bool = False) -> np.ndarray:
        """Fresh atoms for a dim of size n."""
        atoms = np.arange(self.size, self.size + n, dtype=np.int64)
        self.size += n
        if broadcast:
            self.broadcast_atoms.update(atoms.tolist())
        return atoms

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Atoms a[i] and b[i] are the same channel."""
        if a is b:
            return
        if a.shape != b.shape:
            raise ValueError(f"cannot unite channel spaces of sizes {a.shape} and {b.shape}")
        self._edges_a.append(a)
        self._edges_b.append(b)

    def product(self, flat: np.ndarray, factors: list[np.ndarray]) -> None:
        """Record that `flat` is the row-major product of `factors`."""
        sizes = [len(f) for f in factors]
        if int(np.prod(sizes)) != len(flat):
            raise ValueError(f"product of {sizes} does not match {len(flat)}")
        flags = [len(f) > 0 and int(f[0]) in self.broadcast_atoms for f in factors]
        self.products.append(Product(flat, factors, flags))

    def resolve_units(self) -> None:
        """Keep a size-1 factor only where a repeat multiplies it (a layer's single KV head, shared by
        its query heads); elsewhere (batch or unsqueezed dims) drop it, and a product left with one
        factor becomes the identity it is. Called once, after propagation."""
        if not any(len(f) == 1 for p in self.products for f in p.factors):
            return
        labels = self._labels(self._edges_a, self._edges_b)  # equality only: one KV head seen from k and v
        heads = {
            int(labels[f[0]])
            for p in self.products if any(p.broadcast)
            for f, b in zip(p.factors, p.broadcast, strict=True) if len(f) == 1 and not b
        }
        products = []
        for p in self.products:
            kept = [i for i, f in enumerate(p.factors) if len(f) != 1 or int(labels[f[0]]) in heads]
            if len(kept) == 1:
                self.union(p.flat, p.factors[kept[0]])
            elif kept:
                products.append(Product(p.flat, [p.factors[i] for i in kept], [p.broadcast[i] for i in kept]))
        self.products = products

    def _closed(self, product: Product, mode: str) -> list[int]:
        """Indices of the factors whose members are removed together at this granularity."""
        n = len(product.factors)
        if mode == BLOCKS:
            return [i for i in range(n) if not product.broadcast[i]]
        if mode == QUERY_HEADS and any(product.broadcast):
            return [i for i in range(n) if product.broadcast[i]]
        return [i for i in range(n - 1) if not product.broadcast[i]]

    def closed_atoms(self, mode: str) -> np.ndarray:
        """Atoms of every factor closed at this granularity (they mark head-structured components)."""
        parts = [p.factors[i] for p in self.products for i in self._closed(p, mode)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def components(self, mode: str) -> np.ndarray:
        """Component label of every atom, closing products at granularity `mode`."""
        a, b = list(self._edges_a), list(self._edges_b)
        for p in self.products:
            sizes = [len(f) for f in p.factors]
            flat = p.flat.reshape(sizes)
            for i in self._closed(p, mode):
                shape = [1] * len(sizes)
                shape[i] = sizes[i]
                a.append(flat.ravel())
                b.append(np.broadcast_to(p.factors[i].reshape(shape), sizes).ravel())
        return self._labels(a, b)

    def _labels(self, a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
        """Connected-component label of every atom, a[k][i] and b[k][i] being one channel."""
        rows = np.concatenate(a) if a else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(b) if b else np.zeros(0, dtype=np.int64)
        adjacency = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(self.size, self.size))
        _, labels = connected_components(adjacency, directed=False)
        return labels
