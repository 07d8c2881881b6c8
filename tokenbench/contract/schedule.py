"""Multi-stage schedules: which visual-token count each LLM layer sees, and fitting one to a layer-mean budget.

A schedule is a list of stages ``(layer, count)``: from ``layer`` on, ``count`` visual tokens remain (layers before the
first stage see all ``n_visual``). Methods whose budget is a layer average (``budget_kind = "layer_mean"``: PyramidDrop,
SparseVLM, FitPrune, VTW) describe their schedule as a one-parameter family and let :func:`fit_schedule` pick the
member whose mean visual tokens per layer is closest to the requested budget. No torch here.
"""

from __future__ import annotations

from typing import Callable

from tokenbench.errors import ConfigError

Stages = list[tuple[int, int]]


def per_layer(n_visual: int, n_layers: int, stages: Stages) -> list[int]:
    """Visual tokens each layer processes under ``stages`` (sorted by layer)."""
    counts, current, it = [], n_visual, iter(sorted(stages))
    nxt = next(it, None)
    for layer in range(n_layers):
        while nxt is not None and nxt[0] <= layer:
            current = nxt[1]
            nxt = next(it, None)
        counts.append(current)
    return counts


def layer_mean(n_visual: int, n_layers: int, stages: Stages) -> float:
    """Visual tokens per layer, averaged over every layer: the quantity a ``layer_mean`` budget names."""
    return sum(per_layer(n_visual, n_layers, stages)) / n_layers


def fit_schedule(family: Callable[[float], Stages], target: float, n_visual: int, n_layers: int,
        lo: float = 0.0, hi: float = 1.0, iterations: int = 60) -> Stages:
    """The member of ``family`` (non-decreasing layer mean in its parameter, over ``[lo, hi]``) whose layer mean is
    closest to ``target``; ties go to the smaller mean (never over budget when an exact hit is impossible)."""

    def mean(x: float) -> float:
        return layer_mean(n_visual, n_layers, family(x))

    if mean(lo) >= target:
        return family(lo)
    if mean(hi) <= target:
        return family(hi)
    for _ in range(iterations):  # invariant: mean(lo) < target < mean(hi)
        mid = (lo + hi) / 2
        if mean(mid) < target:
            lo = mid
        elif mean(mid) > target:
            hi = mid
        else:
            return family(mid)
    below, above = family(lo), family(hi)
    gap_below = target - layer_mean(n_visual, n_layers, below)
    gap_above = layer_mean(n_visual, n_layers, above) - target
    return below if gap_below <= gap_above else above


#: depth of the model the papers give their layers for (LLaVA-1.5-7B's Vicuna-7B)
REFERENCE_DEPTH = 32


def layer_at_depth(layer: int | None, reference: int, n_layers: int, option: str = "") -> int:
    """A method's layer option: an explicit ``layer`` is taken as given; ``None`` places the paper's ``reference``
    layer (given for 32 layers) by :func:`at_depth` (``option`` names it in the error when it cannot be placed)."""
    return layer if layer is not None else at_depth((reference,), n_layers, option=option)[0]


def at_depth(layers: tuple[int, ...], n_layers: int, reference_depth: int = REFERENCE_DEPTH,
             option: str = "") -> tuple[int, ...]:
    """The one rule every method uses to place layers given for the 32-layer reference in an ``n_layers`` model.

    Each ``layer`` is where a reduction takes effect ("before layer K"). It goes to the same relative depth,
    ``floor(layer * n_layers / reference_depth + 1/2)`` (nearest layer, halves up). A layer >= 1 stays >= 1 (a method
    that reads layer K-1 still has a layer to read), the results stay strictly increasing and inside
    0..n_layers-1. At 32 layers every layer stays where it is; FastV's K=2 becomes 1 at 12 or 16 layers, 2 at 28
    (Qwen2.5-VL-7B) and 3 at 40 (LLaVA-1.5-13B); PyramidDrop's 8/16/24 become 3/6/9 at 12 layers.

    A model too shallow for them is a ConfigError naming ``option`` (e.g. ``"fastv.layer"``) and the depth needed.
    """
    out = _place(layers, n_layers, reference_depth)
    if out and out[-1] > n_layers - 1:
        need = next((n for n in range(n_layers + 1, 64 * reference_depth) if _place(layers, n, reference_depth)[-1] < n), None)
        depth = f"it needs a model of at least {need} decoder layers" if need else "they fit no depth"
        raise ConfigError(
            f"{option or 'layers'}: cannot place {len(layers)} reduction layer(s) {tuple(layers)} (given for "
            f"{reference_depth} layers) in this {n_layers}-layer model; {depth}. Use a deeper model"
            + (f", or set {option} to layers of this one" if option and n_layers > 1 else "")
        )
    return tuple(out)


def _place(layers: tuple[int, ...], n_layers: int, reference_depth: int = REFERENCE_DEPTH) -> list[int]:
    out: list[int] = []
    for layer in layers:
        x = min(n_layers - 1, int(layer * n_layers / reference_depth + 0.5))
        x = max(x, 1 if layer >= 1 else 0)
        if out and x <= out[-1]:
            x = out[-1] + 1
        out.append(x)
    return out
