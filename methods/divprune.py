"""DivPrune (Alvar, Singh, Akbari, Zhang, "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal
Models", CVPR 2025, arXiv:2503.02175; official code vbdi/divprune, ``LLaVA/llava/model/llava_arch.py``:
``DivPrune``, ``pairwise_cosine_similarity`` and the ``#divprune`` block at the end of
``prepare_inputs_labels_for_multimodal``).

Rule, before the LLM (``pre_llm``, one step at layer -1), question-agnostic, on the visual tokens **as they enter the
LLM** (the projector's output, ``Need("visual_embeds")``: the official code slices ``new_input_embeds`` at the image,
after ``mm_projector``, not the CLIP features):

1. distances: ``dist = 1 - cos(x_i, x_j)`` over every pair of the image's N visual tokens (one N x N x D matmul of the
   L2-normalised embeddings);
2. first pick: for every token, its distance to its nearest *other* token (official: the second-smallest entry of its
   column, the smallest being its own ~0); the token whose nearest neighbour is farthest (the most isolated) is kept;
3. each further pick (``keep`` in all): every token's distance to the set kept so far is the minimum of its distances
   to the kept tokens; the token with the largest such distance is kept (greedy max-min diversity, i.e. the
   farthest-point heuristic for the max-min diversity problem). Ties go to the lowest index (``argmax``).
4. the kept tokens keep their original order in the sequence: the official code sorts ``keep_indexs`` before the
   gather (DivPrune issue #8 is about that order); ``select`` returns them ascending and the router sorts every
   method's indices anyway (``order = idx.sort(dim=1)`` in ``tokenbench/engine/router.py``), so the rule is the same
   for every method.

Defaults: none to choose; the budget is the run's ``keep`` (the official ``SUBSET_RATIO`` x N, rounded: its scripts
use 0.098, i.e. 56 of LLaVA-1.5's 576 for the paper's main table). No options.

Deviations from the official code, each stated:

* **Already-kept tokens are excluded** from later picks. Officially a kept token scores ~0 (its distance to itself) and
  is not picked again unless every remaining token duplicates a kept one; then the official loop can return a token
  twice (a shorter, repeated image). Tokenbench keeps exactly ``keep`` distinct tokens, so kept tokens are masked to
  -inf before each argmax (what the community Qwen2.5-VL port, Ironieser/MMTok ``mmtok/qwen/qwen2_5_VLmodel_mmtok.py``,
  does too). Identical whenever the official code returns distinct tokens.
* **Precision**: distances in float32 (the official code computes them in the model's float16), so near-ties may
  resolve differently. Zero vectors (none in practice) get distance 1 to everything instead of NaN.
* **Positions** (``positions``, :mod:`tokenbench.contract.positions`): the official LLaVA integration calls
  ``generate`` with ``position_ids=None``, so after the gather the LLM numbers the shorter sequence contiguously;
  ``positions=auto`` (the default) does the same on LLaVA-1.5 and LLaVA-NeXT and keeps the original M-RoPE ids on
  Qwen2.5-VL; ``positions=original`` keeps every kept token's original id on any model.
* **LLaVA-NeXT** (the official code runs it too, with the same function): the official candidates are every token of
  the image span, row-end newline tokens included, so newlines compete for the budget. Tokenbench's LLaVA-NeXT layout
  counts the newlines as structural (always kept, outside the budget), so DivPrune selects ``keep`` of the base and
  crop tokens and every newline stays, as for every other method. Selection is over the whole image (base and crops
  together), as officially: ``budget_scopes = ("global",)``.
* **Qwen2.5-VL** is not in the official repo. The rule runs unchanged on the merger's output (the LLM input
  embeddings, as on LLaVA), with original M-RoPE positions (``positions=auto``). The community port named above selects on the 2 x 2
  average of the vision features before the merger instead.

Adapters: every adapter (tiny-llava, tiny-llava-next, tiny-qwen2.5-vl, mini-llava, and the full-size ones): it needs
only ``visual_embeds``, which every adapter provides. Nothing is refused.

Cost: the distance matrix, N^2 D MACs per sample (``select_macs`` at layer -1, D the LLM's hidden size); the greedy
loop (``keep`` iterations of a row minimum and an argmax over N) has no matmul. Both are timed as the method's overhead.
"""

from dataclasses import dataclass

from tokenbench.api import Need, PositionsOption, Step, TokenReducer, register_method

NEED = Need("visual_embeds")


@register_method("divprune")
@dataclass(frozen=True)
class DivPrune(PositionsOption, TokenReducer):
    stage = "pre_llm"
    budget_scopes = ("global",)  # one greedy selection over the whole image (base and crops together on LLaVA-NeXT)

    def steps(self, n_layers):
        return (Step(-1, needs=(NEED,)),)

    def reduces(self, keep, n_visual):
        return keep < n_visual

    def select(self, ctx):
        return self.kept(ctx, max_min_diverse(ctx.signal(NEED), ctx.keep))

    def select_macs(self, dims, n_text, n_active, layer, n_visual=0):
        return n_active * n_active * dims.hidden  # the pairwise cosine matrix of the visual embeddings


def max_min_diverse(x, keep: int):
    """DivPrune's greedy max-min selection of ``keep`` of the N rows of each sample of ``x`` (B, N, D) by cosine
    distance; (B, keep) indices, ascending. One matmul per sample (so a batch gives what each sample gives alone) and
    no host synchronisation in the loop."""
    import torch

    b, n, _ = x.shape
    unit = torch.nn.functional.normalize(x.float(), dim=-1)
    dist = torch.stack([1.0 - u @ u.T for u in unit])  # (B, N, N)
    picks = torch.empty(b, keep, dtype=torch.long, device=x.device)
    if keep == 0:
        return picks
    rows = torch.arange(b, device=x.device)
    taken = torch.zeros(b, n, dtype=torch.bool, device=x.device)
    score = dist.topk(2, dim=1, largest=False).values[:, 1]  # per column: distance to the nearest other token
    closest = None
    for i in range(keep):
        j = score.masked_fill(taken, float("-inf")).argmax(dim=1)  # (B,)
        picks[:, i] = j
        taken[rows, j] = True
        row = dist[rows, j]  # (B, N): distances from the new pick to every token
        closest = row if closest is None else torch.minimum(closest, row)
        score = closest  # distance of every token to the kept set
    return picks.sort(dim=1).values
