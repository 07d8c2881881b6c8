"""CDPruner (Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token Pruning in
MLLMs", NeurIPS 2025, arXiv:2506.10967; official code Theia-4869/CDPruner, ``llava/model/llava_arch.py``,
``LlavaMetaForCausalLM.encode_images``, with the text tower in ``llava/model/multimodal_encoder/clip_encoder.py``).

Rule: keep the ``keep`` visual tokens that are the greedy MAP of a *conditional* determinantal point process (DPP),
before any LLM layer sees them. For the N visual tokens of one image:

1. **similarity** S (N x N): cosine similarity of the visual tokens as the LLM receives them (official: the
   ``mm_projector`` output, L2-normalised, in float32);
2. **relevance** r (N): each visual token's cosine similarity to each instruction token, averaged over the instruction
   tokens, then min-max normalised over the image as the official code does, ``q = (r - min r + 1e-6) / (max r -
   min r)`` (so every q > 0 and the most relevant token has q = 1 + 1e-6 / (max r - min r));
   optional mixing (the official code's commented-out ``theta``): for ``0 < theta < 1``,
   ``q = exp(alpha * q)`` with ``alpha = theta / (2 (1 - theta))``; ``theta = 0`` (the default, as released) uses
   q itself;
3. **kernel** L = diag(q) S diag(q), i.e. L_ij = q_i S_ij q_j: quality times diversity;
4. **greedy MAP** by the fast Cholesky-update greedy of Chen et al. 2018 ("Fast Greedy MAP Inference for DPP",
   official ``cis``/``di2s`` loop): d_i^2 = L_ii; repeat ``keep`` times: pick j = argmax d^2, then
   e = (L_j - c_j^T C) / d_j, append e to C, d^2 -= e^2, and d_j^2 = -inf so that j is never picked again. Each pick
   is the token that most increases log det L_Y of the kept set Y;
5. the kept tokens go on in their **original order** (official ``torch.sort(select_idx)``), as a shorter image: the
   official code passes no position ids, so the LLM numbers them contiguously. ``positions=auto`` (the default,
   :mod:`tokenbench.contract.positions`) does the same on LLaVA-1.5 and LLaVA-NeXT and keeps the original M-RoPE ids
   on Qwen2.5-VL; ``positions=original`` keeps every kept token's original id.

Stage: before the LLM (``pre_llm``), on ``Need("visual_embeds")`` (the visual tokens' LLM input embeddings, i.e. the
projector output the official code uses for S) and ``Need("text_embeds")`` (the input embeddings of the non-visual
tokens), so a pruned token never enters any LLM layer, exactly as the official pre-LLM pruning.

Deviations from the official code, each forced by what tokenbench's adapters provide or stated as a choice:

* **Relevance signal.** The official LLaVA code computes r with CLIP: the vision tower's ``post_layernorm`` +
  ``visual_projection`` image embeddings against the CLIP **text encoder**'s embedding of the instruction text (one
  pooled ``text_embeds`` row per 77-token segment). Adapters have no CLIP text tower, so r is computed in the LLM's
  input-embedding space: the visual tokens' LLM input embeddings against the LLM **input embeddings of the
  instruction tokens**, i.e. the non-visual tokens after the image (``ctx.text_after_image``: the question and the
  answer prompt, not the system prompt; a prompt with no text after the image falls back to every valid text
  token). Token embeddings are per-token and context-free, so this is a weaker instruction signal than CLIP's
  contextual text embedding.
* **Sign.** The official code negates the CLIP similarity before the mean (``(-relevance).mean``); its authors
  describe this as a phenomenon observed only with LLaVA's CLIP (CDPruner issues #14, #9). With the LLM's own
  embeddings there is no such inversion to undo, so the default uses r as is; ``negate=True`` applies the official
  sign. (OpenVINO's model-agnostic port, ``openvino_contrib`` ``genai_opt/visual_token_pruning.py``, keeps the
  negation with LLM input embeddings of every text token and theta = 0.5; neither choice is validated on those
  embeddings, so both are options here. A first check on mini-llava, synthetic task, first 40 samples, keep 16 of
  144: retention 69.2 % as is, 53.8 % with ``negate=True``, 61.5 % with ``theta=0.5``, random 46.2 %.)
* **Rank exhaustion.** S has rank at most the hidden size D, so when keep exceeds the kernel's rank (only on tiny
  test models: LLaVA-1.5's D = 4096 > 576) every remaining d^2 reaches 0 and the official loop would divide by
  zero. Here, once the best remaining d^2 is <= 1e-10 (numerically zero), the remaining picks are the unselected
  tokens with the largest q (the DPP's quality term) and their e rows are zero; for keep <= rank this never happens
  and the rule is the official one. The greedy runs in float64 (the official uses float32) so that d^2 of a token
  already spanned by the kept set is 0 rather than float32 round-off.
* **LLaVA-NeXT.** The official NeXT code runs the DPP on each 24x24 crop (the base image and every high-resolution
  crop) with ``visual_token_num`` per crop, before unpadding, with one min-max over all crops. tokenbench selects
  ``keep`` tokens globally over the image as the model lays it out (after unpadding; newline tokens are structural,
  always kept), so ``budget_scopes = ("global",)``: ``--budget-scope crop`` is refused before any compute.
* **FLOPs.** ``select_macs`` counts the two matmuls: the similarity (N^2 D) and the relevance (N x T x D over every
  one of the T non-visual tokens; the mean then takes the instruction rows). The greedy's Cholesky updates
  (sum over picks t of t N multiply-adds, N k(k-1)/2 in all: 10.6 M MACs at k=192 on LLaVA-1.5 against the
  similarity's 1.36 G) are computed elementwise, which tokenbench's matmul-only convention (and FlopCounterMode)
  does not count; ``select_macs`` is not given the step's ``keep``, so a matmul there could not be counted exactly.
  Their time is in the method's measured overhead like all of ``select``.

Options: ``theta`` in [0, 1) (0: the released default, no mixing); ``negate`` (False: r as is; True: the official
CLIP sign); ``positions`` (auto, contiguous, original). Budget: the run's ``keep`` (the official
``visual_token_num``), kept tokens at the LLM's input.

Adapters: every adapter (they all provide the LLM input embeddings), i.e. tiny-llava,
mini-llava, LLaVA-1.5, LLaVA-NeXT (global scope) and Qwen2.5-VL (visual tokens after the merger; the official repo
has no Qwen variant, the rule is model-agnostic). None needs a CLS token.
"""

from dataclasses import dataclass

from tokenbench.api import Need, PositionsOption, Step, TokenReducer, register_method

NEEDS = (Need("visual_embeds"), Need("text_embeds"))
EPS = 1e-10  # d^2 at or below this is numerically zero (float64): the kernel's rank is exhausted


@register_method("cdpruner")
@dataclass(frozen=True)
class CDPruner(PositionsOption, TokenReducer):
    stage = "pre_llm"
    budget_scopes = ("global",)  # one DPP over the whole image (see the LLaVA-NeXT deviation)
    theta: float = 0.0  # relevance mixing q = exp(alpha q), alpha = theta / (2 (1 - theta)); 0: off (released code)
    negate: bool = False  # True: the official CLIP-specific sign, r = mean(-cos)

    def check(self, n_layers):
        if not 0.0 <= self.theta < 1.0:
            raise self.option_error("theta", "must be in [0, 1) (0: no mixing, the released default; the official "
                                    "comment's example is 0.5)", 0.5)

    def steps(self, n_layers):
        return (Step(-1, needs=NEEDS),)

    def reduces(self, keep, n_visual):
        return keep < n_visual

    def quality(self, vis, txt, rows):
        """q (n,) for one sample: ``vis`` (n, D) and ``txt`` (T, D) unit vectors, ``rows`` (T,) the instruction rows
        (none: every q = 1, an unconditioned DPP). Written without reading a value on the host (no sync): the mean
        over the instruction rows is a masked sum over their count, and the branches are ``torch.where``."""
        import torch

        rel = vis @ txt.T  # (n, T) cosine similarity: the counted relevance matmul
        w = rows.to(rel.dtype)
        rel = (rel * w).sum(dim=1) / w.sum().clamp_min(1.0)
        if self.negate:
            rel = -rel
        lo, span = rel.min(), rel.max() - rel.min()
        q = torch.where(span > 0, (rel - lo + 1e-6) / span, torch.ones_like(rel))
        if self.theta > 0:
            q = torch.exp(q * (self.theta / (2 * (1 - self.theta))))
        return torch.where(rows.any(), q, torch.ones_like(q))

    def select(self, ctx):
        import torch

        vis_all, txt_all = (ctx.signal(n).float() for n in NEEDS)
        vis_all = torch.nn.functional.normalize(vis_all, dim=-1)
        txt_all = torch.nn.functional.normalize(txt_all, dim=-1)
        rows_out = []
        for b in range(ctx.batch_size):
            valid = ctx.text_query_mask[b] if ctx.text_query_mask is not None else \
                torch.ones(txt_all.shape[1], dtype=torch.bool, device=txt_all.device)
            after = ctx.text_after_image[b] if ctx.text_after_image is not None else valid
            rows = torch.where(after.any(), after, valid)  # the instruction rows, else every valid text token
            q = self.quality(vis_all[b], txt_all[b], rows)
            sim = vis_all[b] @ vis_all[b].T  # (n, n) cosine similarity: the counted similarity matmul
            kernel = q.double()[:, None] * sim.double() * q.double()[None, :]
            rows_out.append(greedy_map(kernel, q.double(), ctx.keep))
        return self.kept(ctx, torch.stack(rows_out).sort(dim=1).values)

    def select_macs(self, dims, n_text, n_active, layer, n_visual=0):
        return n_active * n_active * dims.hidden + n_active * n_text * dims.hidden


def greedy_map(kernel, q, k: int):
    """Chen et al.'s fast greedy MAP of the DPP with kernel ``kernel`` (n, n): ``k`` indices in pick order. Picks the
    largest q among the unpicked once the kernel's rank is exhausted (every residual d^2 <= EPS). Every choice stays on
    the device (argmax and ``torch.where``, never a value read on the host), so the loop launches a fixed number of
    kernels and never waits for the device; the arithmetic is the official loop's."""
    import torch

    n = kernel.shape[0]
    c = kernel.new_zeros(k, n)  # row t: the t-th column of the incremental Cholesky factor, over every token
    d2 = kernel.diagonal().clone()  # residual d_i^2 = L_ii - ||c_i||^2
    picked = torch.zeros(n, dtype=torch.bool, device=kernel.device)
    out = torch.empty(k, dtype=torch.long, device=kernel.device)
    for t in range(k):
        top, best = d2.max(dim=0)
        spans = top > EPS  # False once the rank is exhausted: the most relevant unpicked token, with no new direction
        j = torch.where(spans, best, q.masked_fill(picked, float("-inf")).argmax()).view(1)
        # elementwise dot products of c_j with every c_i (not a matmul: see the FLOPs note)
        e = (kernel.index_select(0, j)[0] - (c[:t].index_select(1, j) * c[:t]).sum(dim=0)) / d2.index_select(0, j).sqrt()
        e = torch.where(spans, e, torch.zeros_like(e))
        out[t] = j[0]
        picked.index_fill_(0, j, True)
        c[t] = e
        d2 = (d2 - e * e).masked_fill(picked, float("-inf"))
    return out
