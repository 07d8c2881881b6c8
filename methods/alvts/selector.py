"""ALVTS's low-rank selector (arXiv 2606.14277, eq. 1-8 as digested in docs/methods.md §1.3).

Per layer, rank-R factors ``W_Q ~ U_Q V_Q`` and ``W_K ~ U_K V_K`` (separate for Q and K; K is ``n_kv_heads *
head_dim`` wide on GQA models) approximate the layer's attention on its normed input::

    q~ = (X V_Q^T) U_Q^T + b_Q,  k~ = (X V_K^T) U_K^T + b_K    the rank-R product U V is never formed; the
                                                        biases (Qwen2's; none on Llama) are the layer's own
    A~ = softmax(rope(q~) rope(k~)^T * scaling)        causal and padding masked, float32
    S(i) = S_V2V(i) * S_T2V(i)                          mean attention visual token i receives from the visual
                                                        queries, times the mean it receives from the text queries

S_V2V and S_T2V are column sums, over chosen query rows, of a row softmax. :func:`received_attention` computes them
without the (T x T) map: row blocks of float32 logits over the keys each row may see, the rows' log-sum-exp, and one
small matmul per block that sums the normalised rows of each group into the visual columns (memory linear in T;
causal blocks skip the keys after their rows). The projections run in the model's dtype, except on a CPU without
native bfloat16/float16 matmul, where they run in float32 (:func:`compute_dtype`). The calibration oracle S*
(:func:`exact_scores`) is the same code on the layer's full-rank W_Q, W_K. A fused attention kernel was tried and
not adopted: torch's CPU kernel that returns the log-sum-exp (``_scaled_dot_product_flash_attention_for_cpu``) needs
values as wide as the keys and a second, transposed pass for the column sums, cannot pool heads by max, and was no
faster than the blocks in a first (loaded, not conclusive) timing (README, "The selector's cost").
"""

from __future__ import annotations

import functools

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


#: float32 values of one row block, per sample: heads x rows x keys (16 MiB). Memory is linear in T for a fixed block.
BLOCK_ELEMENTS = 1 << 22
MIN_BLOCK_ROWS = 16
EXP_FLOOR = -80.0  # logits more than 80 below their row's peak: exp() < 2e-35 of the peak's, no denormals


def row_blocks(n_tokens: int, n_heads: int, causal: bool = True) -> list[tuple[int, int, int]]:
    """The row blocks of :func:`received_attention`: ``(first row, end row, keys)`` for ``n_tokens`` queries. Rows are
    sequence-ordered, so under the causal mask a block's rows see only the keys before its end. Depends only on the
    sample's size (never on the batch), so the FLOPs of a sample are the same in any batch."""
    rows = max(MIN_BLOCK_ROWS, min(n_tokens, BLOCK_ELEMENTS // max(1, n_heads * n_tokens)))
    return [(r0, min(n_tokens, r0 + rows), min(n_tokens, r0 + rows) if causal else n_tokens)
            for r0 in range(0, n_tokens, rows)]


def compute_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype of the selector's projections: the model's, except on a CPU without native bfloat16/float16 matmul
    units, where torch emulates them (several times slower than float32) and float32 is both faster and exact-er."""
    if like.dtype in (torch.bfloat16, torch.float16) and like.device.type == "cpu" and not _cpu_native(like.dtype):
        return torch.float32
    return like.dtype


@functools.cache
def _cpu_native(dtype: torch.dtype) -> bool:  # asked once per dtype, not on every select
    native = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}[dtype]
    check = getattr(torch.ops.mkldnn, native, None)
    return check is not None and bool(check())


def received_attention(q: torch.Tensor, k: torch.Tensor, inp, causal: bool = True, pooling: str = "mean"):
    """(S_V2V, S_T2V), each (B, n_active) float32: the attention each active visual key receives from the visual query
    rows and from the (valid) text query rows of ``softmax(q k^T * scaling)``, heads pooled by ``pooling``, rows
    averaged (eq. 5).

    ``q`` (B, H, T, hd) and ``k`` (B, Hkv, T, hd) are the rotated queries and keys of every token of ``inp`` (a
    :class:`tokenbench.api.LayerInput`). The (T x T) map is never built: rows go in blocks (:func:`row_blocks`); each
    block's logits over every key it may see are computed in float32, its rows' log-sum-exp normalises them, and a
    small matmul sums the probabilities over the rows of each group, straight into per-key column sums. Peak memory is
    one block, linear in T. Causal and padding masks as in the layer; padding rows carry no weight.
    """
    b, n_heads, n_tok, hd = q.shape
    groups = n_heads // k.shape[1]
    inplace = not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad))  # calibration needs autograd
    q = (q.float() * inp.scaling).view(b, k.shape[1], groups, n_tok, hd)  # GQA: each KV head serves `groups` q heads
    kt = k.float().transpose(-1, -2)  # (B, Hkv, hd, T)
    weights = _row_weights(inp, b, n_tok, q.device)
    padded = not bool(inp.valid.all())
    cols = [_block_columns(q, kt, weights, inp, block, causal, padded, inplace, pooling)
            for block in row_blocks(n_tok, n_heads, causal)]
    col = torch.stack(cols).sum(dim=0) if len(cols) > 1 else cols[0]  # (B, 2, T)
    if pooling == "mean":
        col = col / n_heads
    col = col.gather(2, inp.visual[:, None, :].expand(-1, 2, -1))
    return col[:, 0], col[:, 1]


def _row_weights(inp, b: int, n_tok: int, device) -> torch.Tensor:
    """(B, 2, T) query-row weights: 1/N on the visual rows (group 0), 1/#valid on the valid text rows (group 1)."""
    weights = torch.zeros(b, 2, n_tok, dtype=torch.float32, device=device)
    weights[:, 0].scatter_(1, inp.visual, 1.0 / max(1, inp.visual.shape[1]))
    text_valid = inp.valid.gather(1, inp.text).float()
    weights[:, 1].scatter_(1, inp.text, text_valid / text_valid.sum(dim=1, keepdim=True).clamp_min(1.0))
    return weights


def _block_columns(q: torch.Tensor, kt: torch.Tensor, weights: torch.Tensor, inp, block: tuple[int, int, int],
                   causal: bool, padded: bool, inplace: bool, pooling: str) -> torch.Tensor:
    """One row block's share (B, 2, T) of :func:`received_attention`'s column sums, before the mean's division by
    the heads: ``block`` = (first row, end row, keys the rows may see); ``q`` (B, Hkv, groups, T, hd) scaled float32
    queries, ``kt`` (B, Hkv, hd, T) float32 keys, ``weights`` from :func:`_row_weights`."""
    r0, r1, n_keys = block
    b, n_kv, groups, n_tok, hd = q.shape
    rows = r1 - r0
    future = torch.ones(rows, rows, dtype=torch.bool, device=q.device).triu(1) if causal else None
    pad = ~inp.valid[:, None, None, :n_keys] if padded else None

    def hide(t: torch.Tensor, value: float) -> torch.Tensor:
        """``t`` with the block's masked keys set to ``value``: those after each row (only the block's own square
        has them) and padding."""
        if causal:
            square = t[..., r0:r1]
            if inplace:
                square.masked_fill_(future, value)
            else:
                t = torch.cat([t[..., :r0], square.masked_fill(future, value)], dim=-1)
        if padded:
            t = t.masked_fill_(pad, value) if inplace else t.masked_fill(pad, value)
        return t

    logits = torch.matmul(q[:, :, :, r0:r1].reshape(b, n_kv, groups * rows, hd), kt[..., :n_keys])
    logits = hide(logits.view(b, n_kv * groups, rows, n_keys), torch.finfo(torch.float32).min)
    peak = logits.amax(dim=-1, keepdim=True)
    # exp of a value far below the row's peak is 0 to float precision but takes x86's slow underflow path (10-30x
    # slower per element), and most of a causal block is far below or masked: clamp at -80 (exp = 1.8e-35, a
    # normal float), then zero the masked keys again, so they receive exactly nothing
    if inplace:
        probs = logits.sub_(peak).clamp_(min=EXP_FLOOR).exp_()
    else:
        probs = (logits - peak).clamp(min=EXP_FLOOR).exp()
    probs = hide(probs, 0.0)
    # (B, H, rows, 1): each row's softmax denominator (0 for a padding row that sees no key; it carries no weight)
    total = probs.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    w = weights[:, :, r0:r1]  # (B, 2, rows)
    if pooling == "mean":  # sum over heads of w_j p_hji = sum_h (w_j / total_hj) e_hji, one batched matmul
        col = torch.matmul(w[:, None] / total.transpose(-1, -2), probs).sum(dim=1)
    else:  # max over heads of the probabilities, then the rows' weighted sum
        col = torch.matmul(w, (probs / total).amax(dim=1))
    return torch.nn.functional.pad(col, (0, n_tok - n_keys))


def _rotated(inp, q: torch.Tensor, k: torch.Tensor, rope: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected (B, T, H*hd) queries and keys with the layer's own biases (Qwen2's; Llama has none), split into heads
    and rotated at the tokens' original positions."""
    if inp.q_bias is not None:
        q = q + inp.q_bias.to(q.dtype)
    if inp.k_bias is not None:
        k = k + inp.k_bias.to(k.dtype)
    q, k = _heads(q, inp.head_dim), _heads(k, inp.head_dim)
    return (inp.rope(q), inp.rope(k)) if rope else (q, k)


def project(inp, uq, vq, uk, vk, rope: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The selector's rotated queries (B, H, T, hd) and keys (B, Hkv, T, hd): ``(X V^T) U^T + b`` for Q and K, in the
    factors' dtype; the rank-R product U V is never formed and only the weights are factorised."""
    x = inp.normed.to(uq.dtype)
    return _rotated(inp, (x @ vq.T) @ uq.T, (x @ vk.T) @ uk.T, rope)


def importance(visual_rows: torch.Tensor, text_rows: torch.Tensor, text_valid: torch.Tensor,
               pooling: str = "mean") -> torch.Tensor:
    """S = S_V2V * S_T2V (eq. 5-6) from materialised attention rows to the visual keys (the definition, used by tests
    and by anything that already holds the rows; the selector itself never builds them).

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
    v2v, t2v = received_attention(*project(inp, *factors, rope=rope), inp, causal, pooling)
    return v2v * t2v


def exact_scores(inp, wq: torch.Tensor, wk: torch.Tensor, pooling: str = "mean", causal: bool = True,
                 rope: bool = True) -> torch.Tensor:
    """The oracle S* (eq. 9): the same score from the layer's own full-rank W_Q and W_K (and biases), by the same code."""
    x = inp.normed.to(wq.dtype)
    v2v, t2v = received_attention(*_rotated(inp, x @ wq.T, x @ wk.T, rope), inp, causal, pooling)
    return v2v * t2v


def selector_macs(dims, rank: int, n_tokens: int, pooling: str = "mean", causal: bool = True) -> int:
    """MACs of :func:`selector_scores` for one sample of ``n_tokens`` (text + active visual), tokenbench.measure.flops
    convention (matmuls only; norm, RoPE, masks, exp and sums are elementwise)::

        q~ : n*D*Rq + n*Rq*(H*hd)      k~ : n*D*Rk + n*Rk*(Hkv*hd)
        per row block of b rows and K keys (row_blocks; K = the block's end when causal, else n):
            logits b*K*(H*hd)      row groups' column sums 2*b*K*H (mean pooling) or 2*b*K (max over heads first)

    with Rq, Rk the rank ``rank`` capped at each matrix's own rank (W_K is only Hkv*hd wide on GQA models). Causal
    blocks skip the keys after their last row, so the logits cost about half of the n*n*(H*hd) square.
    """
    n, d = n_tokens, dims.hidden
    rq, rk = min(rank, dims.q_dim, d), min(rank, dims.kv_dim, d)
    sums = 2 * dims.n_heads if pooling == "mean" else 2
    blocks = sum((r1 - r0) * keys * (dims.q_dim + sums) for r0, r1, keys in row_blocks(n, dims.n_heads, causal))
    return n * rq * (d + dims.q_dim) + n * rk * (d + dims.kv_dim) + blocks


def normalise(scores: torch.Tensor) -> torch.Tensor:
    """Scores divided by their mean over the visual tokens (mean 1): the raw products are ~1/N^2, too small for an
    MSE in low precision, and only the ranking matters."""
    return scores / scores.mean(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
