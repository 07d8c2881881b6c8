"""ALVTS's low-rank selector (arXiv 2606.14277, eq. 1-8 as digested in docs/methods.md §1.3).

Per layer, rank-R factors ``W_Q ~ U_Q V_Q`` and ``W_K ~ U_K V_K`` (separate for Q and K; K is ``n_kv_heads *
head_dim`` wide on GQA models) approximate the layer's attention on its normed input::

    q~ = (X V_Q^T) U_Q^T + b_Q,  k~ = (X V_K^T) U_K^T + b_K    the rank-R product U V is never formed; the
                                                        biases (Qwen2's; none on Llama) are the layer's own
    A~ = softmax(rope(q~) rope(k~)^T * scaling)        causal and padding masked, float32
    S(i) = S_V2V(i) * S_T2V(i)                          mean attention visual token i receives from the visual
                                                        queries, times the mean it receives from the text queries

The same :func:`importance` turns the layer's *exact* attention rows (the oracle S* of calibration) into scores.
"""

from __future__ import annotations

import torch

#: The four factors of one layer, by name; an artefact stores them as ``"{layer}.{name}"``.
FACTORS = ("uq", "vq", "uk", "vk")


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated SVD of an ``nn.Linear`` weight (out x in) with the singular values split as square roots (eq. 8):
    ``U = U_R diag(sqrt s)`` (out x R) and ``V = diag(sqrt s) Vh_R`` (R x in), so ``U @ V`` is the best rank-R
    approximation of ``weight``."""
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).contiguous(), (root[:, None] * vh[:rank]).contiguous()


def svd_init(weights, rank: int, layers) -> dict[str, torch.Tensor]:
    """The SVD initialisation of every layer in ``layers``, from :class:`tokenbench.api.ModelWeights`."""
    out = {}
    for layer in layers:
        out[f"{layer}.uq"], out[f"{layer}.vq"] = svd_factors(weights.layer_weight(layer, "q_proj"), rank)
        out[f"{layer}.uk"], out[f"{layer}.vk"] = svd_factors(weights.layer_weight(layer, "k_proj"), rank)
    return out


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, -1, head_dim).transpose(1, 2)


def selector_attention(inp, uq, vq, uk, vk, causal: bool = True, rope: bool = True) -> torch.Tensor:
    """A~ for every token of ``inp`` (a :class:`tokenbench.api.LayerInput`) as queries and keys: (B, H, T, T), float32.

    The projections run in the factors' dtype; the logits and softmax in float32."""
    x = inp.normed.to(uq.dtype)
    q, k = (x @ vq.T) @ uq.T, (x @ vk.T) @ uk.T
    if inp.q_bias is not None:  # the layer's own biases (Qwen2): only the weights are factorised
        q = q + inp.q_bias.to(q.dtype)
    if inp.k_bias is not None:
        k = k + inp.k_bias.to(k.dtype)
    q, k = _heads(q, inp.head_dim), _heads(k, inp.head_dim)
    if rope:
        q, k = inp.rope(q), inp.rope(k)
    k = k.repeat_interleave(inp.n_heads // inp.n_kv_heads, dim=1)  # GQA: each KV head serves a group of q heads
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * inp.scaling
    allowed = inp.valid[:, None, :].expand(-1, inp.valid.shape[1], -1)
    if causal:
        allowed = allowed & (inp.positions[:, None, :] <= inp.positions[:, :, None])
    # padding rows (all keys masked when causal) stay finite; they are never read
    logits = logits.masked_fill(~allowed[:, None], torch.finfo(logits.dtype).min)
    return logits.softmax(dim=-1)


def importance(visual_rows: torch.Tensor, text_rows: torch.Tensor, text_valid: torch.Tensor,
               pooling: str = "mean") -> torch.Tensor:
    """S = S_V2V * S_T2V (eq. 5-6) from attention rows to the visual keys.

    ``visual_rows`` (B, H, N, N): visual queries; ``text_rows`` (B, H, M, N): text queries, of which ``text_valid``
    (B, M) marks the real ones (padding rows are excluded from the mean). Heads are pooled first (``mean``: the
    head-averaged map; ``max``: FitPrune's max over heads). Returns (B, N) in float32."""
    pool = (lambda a: a.mean(dim=1)) if pooling == "mean" else (lambda a: a.amax(dim=1))
    v2v = pool(visual_rows.float()).mean(dim=1)
    w = text_valid.to(torch.float32)[..., None]
    t2v = (pool(text_rows.float()) * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
    return v2v * t2v


def selector_scores(inp, factors: tuple[torch.Tensor, ...], pooling: str = "mean", causal: bool = True,
                    rope: bool = True) -> torch.Tensor:
    """The selector's importance S (B, n_active) of the active visual tokens of ``inp``, in ``ctx.active`` order."""
    probs = selector_attention(inp, *factors, causal=causal, rope=rope)
    # pool the heads first (the same result as importance() pooling them, on H times fewer elements)
    probs = probs.mean(dim=1, keepdim=True) if pooling == "mean" else probs.amax(dim=1, keepdim=True)
    vis = inp.visual
    cols = vis[:, None, None, :].expand(-1, probs.shape[1], -1, -1)

    def rows_to_visual(rows):
        picked = probs.gather(2, rows[:, None, :, None].expand(-1, probs.shape[1], -1, probs.shape[3]))
        return picked.gather(3, cols.expand(-1, -1, rows.shape[1], -1))

    return importance(rows_to_visual(vis), rows_to_visual(inp.text), inp.valid.gather(1, inp.text), pooling)


def selector_macs(dims, rank: int, n_tokens: int) -> int:
    """MACs of :func:`selector_attention` for one sample of ``n_tokens`` (text + active visual), tokenbench.flops
    convention (matmuls only; norm, RoPE and softmax are elementwise)::

        q~ : n*D*Rq + n*Rq*(H*hd)      k~ : n*D*Rk + n*Rk*(Hkv*hd)      logits : n*n*(H*hd)

    with Rq, Rk the rank ``rank`` capped at each matrix's own rank (W_K is only Hkv*hd wide on GQA models).
    """
    n, d = n_tokens, dims.hidden
    rq, rk = min(rank, dims.q_dim, d), min(rank, dims.kv_dim, d)
    return n * rq * (d + dims.q_dim) + n * rk * (d + dims.kv_dim) + n * n * dims.q_dim


def normalise(scores: torch.Tensor) -> torch.Tensor:
    """Scores divided by their mean over the visual tokens (mean 1): the raw products are ~1/N^2, too small for an
    MSE in low precision, and only the ranking matters."""
    return scores / scores.mean(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
