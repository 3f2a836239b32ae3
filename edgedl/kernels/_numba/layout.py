"""numba twins of edgedl.kernels._ref.layout (same names and arguments).

swap_axes copies tile by tile (32 x 32 elements: a tile's source rows stay in L1 while its
destination rows are written in order), on the calling thread (one small compile).
"""
from ..._config import njit

TILE = 32


@njit
def swap_axes(x, out):
    nb, nr, nc = x.shape
    tiles = (nc + TILE - 1) // TILE
    for t in range(nb * tiles):
        b, c0 = t // tiles, (t % tiles) * TILE
        c1 = min(c0 + TILE, nc)
        for r0 in range(0, nr, TILE):
            r1 = min(r0 + TILE, nr)
            for c in range(c0, c1):
                for r in range(r0, r1):
                    out[b, c, r] = x[b, r, c]
