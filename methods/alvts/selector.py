"""ALVTS's low-rank selector (arXiv 2606.14277, eq. 1-8 as digested in docs/methods.md §1.3).

Per layer, rank-R factors ``W_Q ~ U_Q V_Q`` and ``W_K ~ U_K V_K`` (separate for Q and K; K is ``n_kv_heads *
head_dim`` wide on GQA models) approximate the layer's attention on its normed input::

    q~ = (X V_Q^T) U_Q^T + b_Q,  k~ = (X V_K^T) U_K^T + b_K    the rank-R product U V is never formed; the
                                                        biases (Qwen2's; none on Llama) are the layer's own
    A~ = softmax(rope(q~) rope(k~)^T * scaling)        causal and padding masked, float32
    S(i) = S_V2V(i) * S_T2V(i)                          mean attention visual token i receives from the visual
                                                        queries, times the mean it receives from the text queries

S_V2V and S_T2V are column sums, over chosen query rows, of a row softmax. :func:`received_attention` computes them
in a fixed handful of batched ops per layer (no host sync, shapes known from the token count): per block of query
rows (one block up to :data:`BLOCK_ELEMENTS` values; longer sequences in blocks that see only the keys up to their
end), the float32 logits plus the causal/padding mask in one ``baddbmm``, a row softmax, and one matmul that sums each
query group's rows into the key columns. The mask and the row weights depend on the token set alone: built once per
prefill (``LayerInput.memo``). :func:`project` makes both low-rank projections one matmul and both up-projections one
batched matmul where U_Q and U_K share a shape, with one rotation for both (the factors stacked once per artefact,
:func:`tokenbench.methods.alvts.fit.stack`). The projections run in the model's dtype, except on a CPU without
native bfloat16/float16 matmul, where they run in float32 (:func:`compute_dtype`). The calibration oracle S*
(:func:`exact_scores`) is the same code on the layer's full-rank W_Q, W_K (README, "The selector's cost").
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


#: float32 values of one row block, per sample: heads x rows x keys (256 MiB). At LLaVA-1.5's 640 tokens and 32
#: heads (13 M values) the whole map is one block: a handful of kernels per layer; only long sequences split.
BLOCK_ELEMENTS = 1 << 26
MIN_BLOCK_ROWS = 16


def row_blocks(n_tokens: int, n_heads: int, causal: bool = True) -> list[tuple[int, int, int]]:
    """The row blocks of :func:`received_attention`: ``(first row, end row, keys)`` for ``n_tokens`` queries. Rows are
    sequence-ordered, so under the causal mask a block's rows see only the keys before its end: a later block skips
    none, an earlier one the keys after it (shapes fixed by the size alone: no data-dependent slicing, and one block,
    the whole square, up to :data:`BLOCK_ELEMENTS`). Depends only on the sample's size (never on the batch), so the
    FLOPs of a sample are the same in any batch."""
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
    :class:`tokenbench.api.LayerInput`). Per row block (:func:`row_blocks`; one block up to 64 M values): the float32
    logits plus the additive causal/padding mask in one ``baddbmm``, a row softmax, and one matmul that sums each
    query group's rows (weights 1/N on the visual rows, 1/#valid on the valid text rows) into per-key column sums.
    The mask and the row weights depend on the token set alone, so they are built once per prefill (``inp.memo``).
    A fixed number of kernels per layer, no host sync. Padding rows carry no weight.
    """
    b, n_heads, n_tok, hd = q.shape
    n_kv = k.shape[1]
    groups = n_heads // n_kv
    statics = _statics(inp, b, n_heads, n_kv, n_tok, causal, pooling, q.device)
    q = q.float().reshape(b * n_kv, groups, n_tok, hd)  # GQA: each KV head serves `groups` query heads
    kt = k.float().reshape(b * n_kv, n_tok, hd).transpose(1, 2)  # (B*Hkv, hd, T)
    col_parts: list[torch.Tensor] = []
    for (r0, r1, keys), bias in zip(row_blocks(n_tok, n_heads, causal), statics["bias"]):
        rows = r1 - r0
        qb = q if rows == n_tok else q[:, :, r0:r1]
        logits = torch.baddbmm(bias, qb.reshape(b * n_kv, groups * rows, hd), kt[..., :keys], alpha=inp.scaling)
        probs = logits.softmax(dim=-1).view(b, n_heads, rows, keys)
        w = statics["weights"][len(col_parts)]
        if pooling == "mean":  # sum over heads and rows of w_j p_hji (w repeated per head, 1/H folded in): one bmm
            part = torch.matmul(w, probs.view(b, n_heads * rows, keys))
        else:  # max over heads of the probabilities, then the rows' weighted sum
            part = torch.matmul(w, probs.amax(dim=1))
        col_parts.append(part if keys == n_tok else torch.nn.functional.pad(part, (0, n_tok - keys)))
    col = col_parts[0] if len(col_parts) == 1 else torch.stack(col_parts).sum(dim=0)
    col = col[..., slice(*inp.visual_span)] if inp.visual_span else col.gather(2, statics["visual"])
    return col[:, 0], col[:, 1]


def _statics(inp, b: int, n_heads: int, n_kv: int, n_tok: int, causal: bool, pooling: str, device) -> dict:
    """What :func:`received_attention` needs that depends on the token set alone, built once per set and kept in
    ``inp.memo``: each block's additive mask (B*Hkv, groups*rows, T) (0 where a row may see a key: causal and not
    padding; float32's lowest elsewhere, so a row with no visible key is uniform and carries no weight), the query-row
    weights (B, 2, T) (1/N on the visual rows, 1/#valid on the valid text rows; 1/H more under mean pooling) and the
    visual columns' gather index."""
    key = ("alvts.selector", b, n_heads, n_kv, n_tok, causal, pooling, str(device))
    if key in inp.memo:
        return inp.memo[key]
    groups = n_heads // n_kv
    allowed = inp.valid[:, None, :].expand(b, n_tok, n_tok)
    if causal:
        allowed = allowed & (inp.positions[:, None, :] <= inp.positions[:, :, None])
    lowest = torch.finfo(torch.float32).min
    full = torch.zeros(allowed.shape, dtype=torch.float32, device=device).masked_fill_(~allowed, lowest)
    biases = []
    for r0, r1, keys in row_blocks(n_tok, n_heads, causal):
        block = full[:, None, None, r0:r1, :keys].expand(b, n_kv, groups, r1 - r0, keys)
        biases.append(block.reshape(b * n_kv, groups * (r1 - r0), keys))  # a view unless B > 1, GQA or several blocks
    weights = torch.zeros(b, 2, n_tok, dtype=torch.float32, device=device)
    weights[:, 0].scatter_(1, inp.visual, 1.0 / max(1, inp.visual.shape[1]))
    text_valid = inp.valid.gather(1, inp.text).float()
    weights[:, 1].scatter_(1, inp.text, text_valid / text_valid.sum(dim=1, keepdim=True).clamp_min(1.0))
    blocks = []
    for r0, r1, _ in row_blocks(n_tok, n_heads, causal):
        w = weights[..., r0:r1]
        if pooling == "mean":  # (B, 2, H * rows): the rows' weights repeated per head, divided by H
            w = (w / n_heads)[:, :, None, :].expand(b, 2, n_heads, r1 - r0).reshape(b, 2, n_heads * (r1 - r0))
        blocks.append(w)
    out = {"bias": biases, "weights": blocks, "visual": inp.visual[:, None, :].expand(-1, 2, -1)}
    inp.memo[key] = out
    return out


def _rotated(inp, q: torch.Tensor, k: torch.Tensor, rope: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected (B, T, H*hd) queries and keys, split into heads and rotated at the tokens' original positions (one
    rotation over the queries' and keys' heads together)."""
    n_q = q.shape[-1] // inp.head_dim
    both = _heads(torch.cat([q, k], dim=-1), inp.head_dim)
    if rope:
        both = inp.rope(both)
    return both[:, :n_q], both[:, n_q:]


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.linear(x, weight, None if bias is None else bias.to(x.dtype))


def project(inp, uq, vq, uk, vk, rope: bool = True, v_both: torch.Tensor | None = None,
            u_both: torch.Tensor | None = None):
    """The selector's rotated queries (B, H, T, hd) and keys (B, Hkv, T, hd): ``(X V^T) U^T + b`` for Q and K with
    the layer's own biases (Qwen2's; Llama has none), in the factors' dtype; the rank-R product U V is never formed.
    ``v_both`` = ``[V_Q; V_K]`` makes ``X V^T`` one matmul for both; ``u_both`` (U_Q^T and U_K^T stacked, where they
    have one shape) makes the up-projections one batched matmul, rotated together (batch 1, no biases). Stacked once
    per artefact (:func:`tokenbench.methods.alvts.fit.stack`). The same products either way."""
    x = inp.normed.to(uq.dtype)
    low = x @ v_both.T if v_both is not None else torch.cat([x @ vq.T, x @ vk.T], dim=-1)
    r = vq.shape[0]
    b, n_tok = x.shape[:2]
    if u_both is not None and b == 1 and inp.q_bias is None and inp.k_bias is None:
        both = torch.bmm(low.view(n_tok, 2, r).transpose(0, 1), u_both)  # (2, T, out): queries, then keys
        both = both.view(2, n_tok, -1, inp.head_dim).transpose(1, 2)  # (2, H, T, hd): "batch" 2 = q and k
        if rope:
            both = inp.rope(both)  # cos/sin (1, T, hd) broadcast over the two
        return both[:1], both[1:]
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (uq, uk, low, inp.q_bias, inp.k_bias)):  # autograd: no out=
        return _rotated(inp, _linear(low[..., :r], uq, inp.q_bias), _linear(low[..., r:], uk, inp.k_bias), rope)
    # queries and keys written side by side into one buffer (one rotation for both, no concatenation)
    flat = low.view(b * n_tok, -1)
    both = flat.new_empty(b * n_tok, uq.shape[0] + uk.shape[0])
    for part, (u, bias, cols) in enumerate(((uq, inp.q_bias, slice(0, uq.shape[0])),
                                            (uk, inp.k_bias, slice(uq.shape[0], None)))):
        a = flat[:, r * part:r * (part + 1)]
        if bias is None:
            torch.mm(a, u.T, out=both[:, cols])
        else:
            torch.addmm(bias.to(a.dtype), a, u.T, out=both[:, cols])
    both = _heads(both.view(b, n_tok, -1), inp.head_dim)
    if rope:
        both = inp.rope(both)
    n_q = uq.shape[0] // inp.head_dim
    return both[:, :n_q], both[:, n_q:]


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
    """The selector's importance S (B, n_active) of the active visual tokens of ``inp``, in ``ctx.active`` order.
    ``factors``: (U_Q, V_Q, U_K, V_K), optionally followed by their stacked forms (``v_both``, ``u_both``: see
    :func:`project`)."""
    stacked = dict(zip(("v_both", "u_both"), factors[4:]))
    v2v, t2v = received_attention(*project(inp, *factors[:4], rope=rope, **stacked), inp, causal, pooling)
    return v2v * t2v


def exact_scores(inp, wq: torch.Tensor, wk: torch.Tensor, pooling: str = "mean", causal: bool = True,
                 rope: bool = True) -> torch.Tensor:
    """The oracle S* (eq. 9): the same score from the layer's own full-rank W_Q and W_K (and biases), by the same code."""
    x = inp.normed.to(wq.dtype)
    q, k = _linear(x, wq, inp.q_bias), _linear(x, wk, inp.k_bias)
    v2v, t2v = received_attention(*_rotated(inp, q, k, rope), inp, causal, pooling)
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
