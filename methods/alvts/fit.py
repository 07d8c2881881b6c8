"""ALVTS's factors: the SVD initialisation, loading a calibrated artefact, and calibration (importance consistency).

Calibration (eq. 9) fits each layer's factors, the LVLM frozen, so that the selector's scores match the oracle S*:
the same score computed by the same code from the layer's *exact* W_Q and W_K (``selector.exact_scores``) on the
unreduced model's layer inputs. Layers are independent (each loss reaches only its own layer's factors). Scores are
normalised to mean 1 before the MSE (raw products are ~1/N^2) and everything runs in float32. The paper reports
neither optimiser nor schedule; we use Adam with a learning rate relative to each factor's RMS, a few epochs.
"""

from __future__ import annotations

import os
import time

import torch

from tokenbench import artefacts as calibration
from tokenbench.api import Calibrated, ConfigError, Need, Prepared
from tokenbench.methods.alvts.selector import FACTORS, compute_dtype, exact_scores, normalise, selector_scores, svd_init

METHOD = "alvts"
CACHE_LIMIT_BYTES = 2 * 2**30  # cache the frozen model's layer inputs across epochs below this; re-run it above


class Factors:
    """The prepared artefact: per-layer factors, moved to the run's device and dtype once, on first use."""

    def __init__(self, tensors: dict[str, torch.Tensor], rank: int) -> None:
        self.tensors, self.rank = tensors, rank
        self._moved: dict[tuple, tuple[torch.Tensor, ...]] = {}
        layers = {name.split(".")[0] for name in tensors}
        self._stacked = {layer: stack(*(tensors[f"{layer}.{n}"] for n in FACTORS)) for layer in layers}

    def factors(self, layer: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Layer ``layer``'s factors (U_Q, V_Q, U_K, V_K, then the stacked forms of :func:`stack`) on ``like``'s
        device, in the selector's compute dtype for it."""
        dtype = compute_dtype(like)
        key = (layer, like.device, dtype)
        if key not in self._moved:
            moved = tuple(self.tensors[f"{layer}.{n}"].to(like.device, dtype) for n in FACTORS)
            self._moved[key] = (*moved, *(None if t is None else t.to(like.device, dtype)
                                          for t in self._stacked[str(layer)]))
        return self._moved[key]


def stack(uq, vq, uk, vk) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The factors as the selector multiplies them (:func:`tokenbench.methods.alvts.selector.project`): ``[V_Q; V_K]``
    (one matmul for both low-rank projections) and, where U_Q and U_K have one shape (no GQA), ``U^T`` of both
    stacked (2, R, out), one batched matmul for both up-projections; built once per artefact."""
    u_both = torch.stack([uq.T, uk.T]).contiguous() if uq.shape == uk.shape else None
    return torch.cat([vq, vk]), u_both


def key(method, rank: int) -> dict:
    """The settings a fit depends on: an artefact is refused by a run whose settings differ."""
    return {"rank": rank, "pooling": method.pooling, "causal": method.causal, "rope": method.rope}


def tag(method, rank: int) -> str:
    """The artefact's file name in the default location."""
    return f"rank{rank}-{method.pooling}" + ("" if method.causal else "-noncausal") + ("" if method.rope else "-norope")


def shipped_path(model_dir: str, method, rank: int) -> str:
    """Where a checkpoint directory ships its own artefact: ``<dir>/calibration/alvts/<tag>.safetensors``."""
    return os.path.join(model_dir, "calibration", METHOD, f"{tag(method, rank)}.safetensors")


def expected_meta(method, weights, rank: int) -> dict:
    fp = weights.fingerprint()
    return {"method": METHOD, "config_hash": fp["config_hash"], "weights_hash": fp["weights_hash"]} | key(method, rank)


def prepare(method, weights) -> Prepared:
    rank = method.resolved_rank(weights.text_config.hidden_size)
    layers = method.selected_layers(weights.n_layers)
    info = {"rank": rank}
    if method.calibration == "svd":
        return Prepared(Factors(svd_init(weights, rank, layers), rank), info | {"calibration": "svd-init"})
    path = method.calibration
    if method.calibration == "auto":
        path = calibration.default_path(METHOD, weights.fingerprint(), tag(method, rank))
        shipped = shipped_path(weights.source_dir, method, rank) if weights.source_dir else None
        if shipped and os.path.isfile(shipped):
            path = shipped  # the checkpoint's own artefact (tokenbench-mini ships one) wins over a local refit, which
            # runs use only when named (-a alvts.calibration=PATH): a quick refit never silently replaces it
        if not os.path.isfile(path):
            warning = (f"alvts: no calibration artefact for this model at {path}; running on the SVD initialisation "
                       f"(uncalibrated). Make one with `tokenbench calibrate alvts --model <this model>`, or pass "
                       "-a alvts.calibration=svd to ask for the SVD initialisation explicitly")
            return Prepared(Factors(svd_init(weights, rank, layers), rank),
                            info | {"calibration": "svd-init", "calibration_missing": path}, warning)
    tensors, meta = calibration.load(path)
    calibration.check(path, meta, expected_meta(method, weights, rank))
    check_factors(path, tensors, weights.text_config, rank, layers)
    device = weights.layer_weight(0, "input_layernorm").device
    tensors = {k: v.to(device) for k, v in tensors.items()}
    report = {k: meta.get(k) for k in ("samples", "score_error_before", "score_error_after")}
    return Prepared(Factors(tensors, rank), info | {"calibration": os.path.abspath(path)} | report)


def check_factors(path: str, tensors: dict, config, rank: int, layers) -> None:
    """Refuse an artefact whose tensors cannot be this model's factors: a factor missing, of the wrong shape (U: out x
    R, V: R x in of the layer's q_proj/k_proj, R = min(rank, out, in)), or not finite. Its metadata alone is not
    trusted."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    dims = {"q": (config.num_attention_heads * head_dim, config.hidden_size), "k": (kv_heads * head_dim,
                                                                                   config.hidden_size)}
    fix = "make it again with `tokenbench calibrate alvts --model ...`, or pass -a alvts.calibration=svd"
    for layer in layers:
        for proj, (out, inp) in dims.items():
            r = min(rank, out, inp)
            for name, want in ((f"{layer}.u{proj}", (out, r)), (f"{layer}.v{proj}", (r, inp))):
                t = tensors.get(name)
                if t is None:
                    raise ConfigError(f"calibration artefact {path!r} has no tensor {name!r} (layer {layer}'s "
                                      f"factors); {fix}")
                if tuple(t.shape) != want:
                    raise ConfigError(f"calibration artefact {path!r}: tensor {name!r} has shape {tuple(t.shape)}, "
                                      f"this model needs {want}; {fix}")
                if not bool(torch.isfinite(t).all()):
                    raise ConfigError(f"calibration artefact {path!r}: tensor {name!r} holds NaN or infinite values; "
                                      f"{fix}")


# -- calibration -------------------------------------------------------------------------------------------------------------
def _pairs(method, weights, batch: dict) -> list[tuple[int, object, torch.Tensor]]:
    """(layer, LayerInput, oracle score S*) for each layer of one visited batch: S* is the selector's own code on the
    layer's full-rank W_Q, W_K (:func:`exact_scores`)."""
    out = []
    with torch.no_grad():
        for layer, ctx in sorted(batch.items()):
            inp = ctx.signal(Need("layer_input", layer=layer))
            wq, wk = (weights.layer_weight(layer, name).to(inp.normed.device) for name in ("q_proj", "k_proj"))
            target = exact_scores(inp, wq, wk, method.pooling, method.causal, method.rope)
            out.append((layer, inp, target))
    return out


def _scores(method, inp, params, layer):
    return selector_scores(inp, tuple(params[f"{layer}.{n}"] for n in FACTORS), method.pooling, method.causal,
                           method.rope)


def _error(method, pairs, params) -> tuple[float, float, int]:
    """Summed MSE of the normalised scores, summed top-k recall (k = N/9, the 89 % setting), count of (sample, layer)."""
    mse = recall = 0.0
    count = 0
    with torch.no_grad():
        for layer, inp, target in pairs:
            s = _scores(method, inp, params, layer)
            mse += float(((normalise(s) - normalise(target)) ** 2).mean(dim=-1).sum())
            k = max(1, target.shape[-1] // 9)
            ours, truth = s.topk(k, dim=-1).indices, target.topk(k, dim=-1).indices
            hit = torch.zeros_like(target, dtype=torch.bool).scatter_(1, truth, True).gather(1, ours)
            recall += float(hit.float().mean(dim=-1).sum())
            count += target.shape[0]
    return mse, recall, count


def calibrate(method, weights, data, epochs: int = 3, lr: float = 1e-2, log=print) -> Calibrated:
    t0 = time.perf_counter()
    rank = method.resolved_rank(weights.text_config.hidden_size)
    params = {k: torch.nn.Parameter(v.clone()) for k, v in svd_init(weights, rank, range(weights.n_layers)).items()}

    def heldout(p):
        totals = [0.0, 0.0, 0]
        for batch in data.heldout():
            for i, x in enumerate(_error(method, _pairs(method, weights, batch), p)):
                totals[i] += x
        return totals[0] / totals[2], totals[1] / totals[2]

    before, recall_before = heldout(params)
    log(f"alvts: held-out score error (MSE of mean-normalised scores) with the SVD initialisation: {before:.4g}, "
        f"top-N/9 recall {recall_before:.3f}")
    # Adam, each factor's learning rate relative to its own scale (factors of different layers differ in size)
    opt = torch.optim.Adam([{"params": [p], "lr": lr * float(p.detach().pow(2).mean().sqrt())} for p in params.values()])
    cached: list | None = [] if epochs > 1 else None
    train_mse = float("nan")
    for epoch in range(epochs):
        source = cached if cached and epoch > 0 else None
        total, count, size = 0.0, 0, 0
        for pairs in source if source is not None else (_pairs(method, weights, b) for b in data.train()):
            loss = sum(((normalise(_scores(method, inp, params, layer)) - normalise(target)) ** 2).mean()
                       for layer, inp, target in pairs) / len(pairs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()), count + 1
            if cached is not None and epoch == 0:
                size += sum(inp.normed.numel() * inp.normed.element_size() for _, inp, _ in pairs)
                if size < CACHE_LIMIT_BYTES:
                    cached.append(pairs)
                else:  # too big to keep: later epochs run the frozen model again
                    cached = None
        train_mse = total / max(count, 1)
        log(f"alvts: epoch {epoch + 1}/{epochs}: mean training loss {train_mse:.4g}")
    after, recall_after = heldout(params)
    log(f"alvts: held-out score error after calibration: {after:.4g} (was {before:.4g}), top-N/9 recall "
        f"{recall_after:.3f} (was {recall_before:.3f})")
    report = {
        "rank": rank, "layers": weights.n_layers, "epochs": epochs, "lr_relative": lr, "optimizer": "adam",
        "score_error_before": before, "score_error_after": after, "topk_recall_before": recall_before,
        "topk_recall_after": recall_after, "train_loss_last_epoch": train_mse, "fit_s": time.perf_counter() - t0,
    }
    return Calibrated({k: p.detach() for k, p in params.items()}, report, key(method, rank), tag(method, rank))
