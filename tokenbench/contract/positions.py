"""Position ids after a cut before the LLM: the ``positions`` option every pre-LLM method shares.

A method that drops visual tokens before the LLM can hand the LLM the kept tokens either as a **shorter image**, with
contiguous position ids (the text after the image moves up by the tokens dropped), or in place, each kept token with
its **original** position id (the gaps stay). The official code of every pre-LLM method tokenbench ships (VisionZip,
DivPrune, CDPruner, VisPruner, SCOPE, and the pooling controls of peer studies) inserts the kept tokens into the
sequence as a shorter image and passes no position ids: positions are contiguous there. On Qwen2.5-VL the image's
positions are M-RoPE's (t, h, w) ids, which have no contiguous renumbering; the official Qwen2.5-VL variants keep
them. So:

* ``positions="auto"`` (every pre-LLM method's default): contiguous on a model with one position id per token
  (LLaVA-1.5, LLaVA-NeXT: their official code), original on M-RoPE (Qwen2.5-VL: theirs);
* ``positions="contiguous"``: a shorter image; refused before any compute on an M-RoPE model;
* ``positions="original"``: every kept token keeps its original id, the rule of every in-LLM method.

In-LLM methods (a ``prune`` or ``route`` step at an LLM layer) always keep original ids: the rotary embedding was
applied to the tokens before them. The row's ``positions`` field says what each run did. The router does the
renumbering (:class:`~tokenbench.contract.method.Selection` with ``renumber=True``); a method only says which it wants.

This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenbench.contract.layout import VisualLayout

POSITIONS = ("auto", "contiguous", "original")


@dataclass(frozen=True)
class PositionsOption:
    """The ``positions`` option of a pre-LLM method (a mixin: list it before ``TokenReducer``); checked when the method
    is built."""

    positions: str = "auto"  # auto | contiguous | original (see tokenbench.contract.positions)

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise self.option_error("positions", f"must be one of {', '.join(POSITIONS)} (auto: contiguous on "
                                    "LLaVA, original on Qwen2.5-VL's M-RoPE, as the official code does)", "original")

    def renumbers(self, layout: VisualLayout) -> bool:
        """Whether this run's kept tokens get contiguous positions on a model whose layout is ``layout``."""
        if self.positions == "auto":
            return layout.position_axes == 1
        return self.positions == "contiguous"


    def kept(self, ctx, indices, *, embeds=None, features=None, macs: int = 0):
        """The :class:`~tokenbench.contract.method.Selection` of ``indices`` (B, k) with their new ``embeds`` or
        ``features`` (row i for ``indices[:, i]``), renumbered as :meth:`renumbers` says for ``ctx``'s layout. A
        renumbered image is read in raster order, so the rows are put in ascending slot order here."""
        from tokenbench.contract.method import Selection

        renumber = self.renumbers(ctx.layout)
        rows = embeds if embeds is not None else features
        if renumber and rows is not None:
            order = indices.argsort(dim=1)
            indices = indices.gather(1, order)
            rows = rows.gather(1, order[..., None].expand(-1, -1, rows.shape[-1]).to(rows.device))
            embeds, features = (rows, None) if embeds is not None else (None, rows)
        return Selection(indices, embeds=embeds, features=features, renumber=renumber, macs=macs)


def check_positions(method, layout: VisualLayout) -> None:
    """Refuse, before any compute, ``positions=contiguous`` on a model whose position ids cannot be renumbered."""
    from tokenbench.errors import IncompatibleError

    if getattr(method, "positions", None) == "contiguous" and layout.position_axes != 1:
        raise IncompatibleError(
            f"method {method.name!r}: positions=contiguous needs one position id per token, but this model's image "
            f"positions have {layout.position_axes} axes (M-RoPE's t, h, w), which have no contiguous renumbering. "
            f"Use -a {method.name}.positions=auto (original ids here, as the official Qwen2.5-VL code keeps them)")


def positions_of(renumbered: bool) -> str:
    """The row's word for what a run did."""
    return "contiguous" if renumbered else "original"
