"""Train a tokenbench-mini model from scratch on the synthetic task, on a CPU, deterministically from its seed.

    python -m tokenbench.models.mini.train --out models/mini/llava-1.5 --seed 0
    python -m tokenbench.models.mini.train --arch qwen2.5-vl --out models/mini/qwen2.5-vl --seed 0

``--arch qwen2.5-vl`` is Qwen2.5-VL's architecture at the same widths (``build_qwen``): 14 px patches merged 2 x 2, a
vision tower with window attention, a Qwen2 decoder with M-RoPE, its chat template, trained on the synthetic task's
mixed aspects (144 to 192 visual tokens per image); the auxiliary labels follow each merged token's centre.

The recipe (``../shared/docs/transformers-notes.md`` §Q5, adapted to 576 visual tokens):

* **Architecture**: LLaVA-1.5's exactly (``LlavaForConditionalGeneration``: a CLIP ViT at 336 px with 14 px patches, so
  576 visual tokens, the penultimate layer's patch features, a 2-layer GELU projector, a Llama decoder) at toy width.
* **Data**: fresh synthetic scenes every step (the task's defaults: grid 6, 2-6 objects), never a held-out one (training seeds are the
  strings ``mini-train-{seed}-{step}-{j}``, evaluation uses ``synthetic-{seed}-{i}``). Each image carries
  ``--qa`` packed turns, ``USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>...``, the first
  formatted exactly as the adapter formats an evaluation prompt; the loss is on every answer and its ``</s>``.
* **A dense auxiliary loss** on the projector's output: two linear heads predict, for each visual token, the colour
  and the shape of the object in its slot (or none). It stands in for a pretrained vision encoder; the heads are not
  saved.
* AdamW, linear warm-up then cosine decay, gradient clipping at 1.

A second stage (``--init-from DIR --seed S``) starts from the weights of a finished run with a fresh optimizer and
schedule, on new images (its own seed); its ``training.json`` holds the first stage's record and weights' digest, so
the two commands reproduce the model.

Every run is deterministic from ``--seed`` on a given machine and thread count (``torch.manual_seed`` for the
initialisation, named ``random.Random`` streams for the data). The directory written holds ``model.safetensors``,
the config, tokenizer, processor and ``training.json`` (settings, wall time, versions, the validation curve).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time

#: (vision hidden, layers, heads, FFN), (LLM hidden, layers, heads, FFN)
SIZES = {arch: ((64, 3, 4, 256), (64, 12, 4, 176)) for arch in ("llava-1.5", "llava-next", "qwen2.5-vl")}
IMAGE, PATCH = 336, 28  # 12 x 12 = 144 visual tokens (see README.md: 576 did not learn within the budget)
#: LLaVA-NeXT: 168 px crops of 28 px patches (6 x 6 tokens each), the 7B's grid pinpoints halved ([height, width]), so
#: a 336 x 336 image is the 6 x 6 base image plus 2 x 2 crops at full resolution (each object 2 x 2 tokens there)
NEXT_CROP = 168
NEXT_PINPOINTS = [[168, 336], [336, 168], [336, 336], [504, 168], [168, 504]]
#: Qwen2.5-VL: 14 px patches merged 2 x 2 (one token per 28 px, as LLaVA's here); the synthetic task's mixed aspects
#: (336 x 336 to 504 x 280 px) give 144 to 192 tokens, none resized: the range holds them all
QWEN_PIXELS = (28 * 28 * 64, 28 * 28 * 192)
QWEN_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>",
                 "<|im_start|>", "<|im_end|>")


def build_model(arch: str, seed: int):
    """The untrained model (initialised from ``seed``) and its processor."""
    if arch == "qwen2.5-vl":
        return build_qwen(seed)
    import torch
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaNextConfig, LlavaNextForConditionalGeneration)

    from tokenbench.models.llava import llava_processor
    from tokenbench.models.llava_next import llava_next_processor
    from tokenbench.models.mini.tokenizer import word_tokenizer

    (vh, vl, vheads, vffn), (h, layers, heads, ffn) = SIZES[arch]
    tok = word_tokenizer()
    side = NEXT_CROP if arch == "llava-next" else IMAGE
    vision = CLIPVisionConfig(hidden_size=vh, intermediate_size=vffn, num_hidden_layers=vl, num_attention_heads=vheads,
                              image_size=side, patch_size=PATCH, projection_dim=vh)
    text = LlamaConfig(hidden_size=h, intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=heads, vocab_size=len(tok), max_position_embeddings=1024,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       tie_word_embeddings=False)
    common = dict(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                  vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(seed)
    if arch == "llava-next":
        model = LlavaNextForConditionalGeneration(LlavaNextConfig(image_grid_pinpoints=NEXT_PINPOINTS, **common))
        processor = llava_next_processor(tok, NEXT_CROP, PATCH, NEXT_PINPOINTS)
    else:
        model, processor = LlavaForConditionalGeneration(LlavaConfig(**common)), llava_processor(tok, IMAGE, PATCH)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model, processor


def build_qwen(seed: int):
    """Qwen2.5-VL's architecture at toy width: the vision tower with window attention (windows of 4 x 4 tokens, the
    last block full attention), 2 x 2 merging, a Qwen2 decoder with M-RoPE."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from tokenbench.models.mini.tokenizer import word_tokenizer
    from tokenbench.models.qwen2_5_vl import QwenVLProcessor

    (vh, vl, vheads, vffn), (h, layers, heads, ffn) = SIZES["qwen2.5-vl"]
    tok = word_tokenizer(QWEN_SPECIALS, "<|image_pad|>", "system You are a helpful assistant. user assistant")
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        vision_config={"depth": vl, "hidden_size": vh, "intermediate_size": vffn, "num_heads": vheads,
                       "out_hidden_size": h, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "window_size": 112, "fullatt_block_indexes": [vl - 1]},
        text_config={"hidden_size": h, "intermediate_size": ffn, "num_hidden_layers": layers,
                     "num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": len(tok),
                     "max_position_embeddings": 1024, "tie_word_embeddings": False,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},
                     "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": ids["<|im_end|>"]},
        image_token_id=ids["<|image_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], video_token_id=tok.unk_token_id)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = tok.pad_token_id
    image = Qwen2VLImageProcessorPil(min_pixels=QWEN_PIXELS[0], max_pixels=QWEN_PIXELS[1], patch_size=14,
                                     merge_size=2, temporal_patch_size=2)
    return model, QwenVLProcessor(image, tok)


class Turns:
    """How an architecture packs question/answer turns: the evaluation prompt of the first turn, the later turns, and
    the token after which an answer starts (its answer and end-of-turn token carry the loss)."""

    def __init__(self, arch: str) -> None:
        from tokenbench.models.llava import LlavaAdapter
        from tokenbench.models.qwen2_5_vl import TEMPLATE

        self.qwen = arch == "qwen2.5-vl"
        self.template = TEMPLATE if self.qwen else LlavaAdapter.template

    def text(self, pairs) -> str:
        if self.qwen:
            return (self.template.format(question=pairs[0][0]) + f"{pairs[0][1]}<|im_end|>\n"
                    + "".join(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n"
                              for q, a in pairs[1:]))
        return (self.template.format(question=pairs[0][0]) + f" {pairs[0][1]}</s>"
                + "".join(f"USER: {q} ASSISTANT: {a}</s>" for q, a in pairs[1:]))

    def targets(self, ids, tok):
        """Labels: -100 everywhere but each answer and its end-of-turn token."""
        import torch

        targets = torch.full_like(ids, -100)
        if self.qwen:  # <|im_start|> assistant answer <|im_end|>
            after = (ids[:, 1:] == tok.convert_tokens_to_ids("assistant")) & \
                (ids[:, :-1] == tok.convert_tokens_to_ids("<|im_start|>"))
            starts, skip = after.nonzero(as_tuple=True), 2
        else:  # ASSISTANT : answer </s>
            starts, skip = (ids == tok.convert_tokens_to_ids("ASSISTANT")).nonzero(as_tuple=True), 2
        for r, c in zip(*(x.tolist() for x in starts)):
            targets[r, c + skip:c + skip + 2] = ids[r, c + skip:c + skip + 2]
        return targets


def task_answers() -> list[str]:
    """Every answer of the synthetic task (colours, shapes, counts, yes, no)."""
    from tokenbench.tasks.synthetic import COLORS, SHAPES

    return [*COLORS, *SHAPES, *(str(i) for i in range(21)), "yes", "no"]


def aux_labels(scene, rows: int, cols: int, grid: int):
    """(2, rows * cols) colour and shape of the object in each visual token's slot (0: none), by the token's centre."""
    import torch

    from tokenbench.tasks.synthetic import COLORS, SHAPES

    labels = torch.zeros(2, rows, cols, dtype=torch.long)
    for r in range(rows):
        for c in range(cols):
            obj = scene.get((int((r + 0.5) * grid / rows), int((c + 0.5) * grid / cols)))
            if obj is not None:
                labels[0, r, c], labels[1, r, c] = 1 + list(COLORS).index(obj[0]), 1 + SHAPES.index(obj[1])
    return labels.flatten(1)


def next_aux_labels(scene, size, grid: int):
    """LLaVA-NeXT's image span, in the LLM's order: the base image's g x g tokens, then the unpadded high-resolution
    grid row by row, each row followed by its newline token (labelled -100: not a visual token, no loss)."""
    import torch

    from tokenbench.models.llava_next import anyres_geometry

    g, _, _, (r0, r1), (c0, c1) = anyres_geometry(NEXT_CROP, PATCH, NEXT_PINPOINTS, size)
    rows = aux_labels(scene, r1 - r0, c1 - c0, grid).view(2, r1 - r0, c1 - c0)
    newline = torch.full((2, r1 - r0, 1), -100, dtype=torch.long)
    return torch.cat([aux_labels(scene, g, g, grid), torch.cat([rows, newline], dim=2).flatten(1)], dim=1)


def training_batch(processor, seed: int, step: int, size: int, qa: int, arch: str = "llava-1.5"):
    """One batch of fresh scenes: model inputs, answer-token labels and the per-token auxiliary labels (2, every image
    token, sample after sample). LLaVA-1.5: square 336 px images (12 x 12 tokens, each object its slot's 2 x 2);
    LLaVA-NeXT and Qwen2.5-VL: the synthetic task's mixed aspects (Qwen: one token per 28 px; NeXT: the base image
    and the unpadded crop grid, :func:`next_aux_labels`)."""
    import torch
    from PIL import Image

    from tokenbench.tasks.synthetic import ASPECTS, QUESTION_TYPES, qa_pairs, render, scene_for

    turns, grid = Turns(arch), 6
    texts, images, aux = [], [], []
    for j in range(size):
        rng = random.Random(f"mini-train-{seed}-{step}-{j}")
        qtype = rng.choice(QUESTION_TYPES)
        scene, target = scene_for(qtype, rng, grid, rng.randint(2, 6))
        texts.append(turns.text(qa_pairs(scene, target, qtype, rng, qa)))
        image = render(scene, IMAGE, grid)
        if arch != "llava-1.5":
            w, h = ASPECTS[rng.randrange(len(ASPECTS))]
            image = image.resize((IMAGE * w // 6, IMAGE * h // 6), Image.NEAREST)
        images.append(image)
        aux.append(next_aux_labels(scene, image.size, grid) if arch == "llava-next"
                   else aux_labels(scene, image.size[1] // 28, image.size[0] // 28, grid))
    processor.tokenizer.padding_side = "right"
    enc = processor(images=images, text=texts, return_tensors="pt", padding=True)
    return enc, turns.targets(enc["input_ids"], processor.tokenizer), torch.cat(aux, dim=1)


def first_token_accuracy(model, processor, samples, arch: str = "llava-1.5") -> dict[str, float]:
    """Share of ``samples`` whose greedy first answer token is the gold answer, per question type and overall."""
    import torch

    template = Turns(arch).template
    processor.tokenizer.padding_side = "left"
    hits: dict[str, list[bool]] = {}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(samples), 50):
            chunk = samples[start:start + 50]
            enc = processor(images=[s.image for s in chunk], return_tensors="pt", padding=True,
                            text=[template.format(question=s.question) for s in chunk])
            pred = model(**enc).logits[:, -1].argmax(-1).tolist()
            for s, p in zip(chunk, pred):
                hits.setdefault(s.meta["type"], []).append(processor.tokenizer.convert_ids_to_tokens(p) == s.answer)
    model.train()
    out = {k: sum(v) / len(v) for k, v in sorted(hits.items())}
    out["all"] = sum(sum(v) for v in hits.values()) / len(samples)
    return out


def train(args) -> dict:
    import torch
    import transformers

    from tokenbench.models.mini import resume

    from tokenbench.tasks.synthetic import COLORS, SHAPES, SyntheticTask

    model, processor = build_model(args.arch, args.seed)
    init = start_from(model, args)
    hidden = model.config.text_config.hidden_size
    heads = torch.nn.ModuleList([torch.nn.Linear(hidden, 1 + len(COLORS)), torch.nn.Linear(hidden, 1 + len(SHAPES))])
    captured = {}  # the LLM's visual-token inputs, (all tokens, hidden)
    if args.arch == "qwen2.5-vl":  # the merger's output in raster order (the tower's pooler output)
        model.model.visual.register_forward_hook(lambda m, i, o: captured.__setitem__("v", o.pooler_output))
    elif args.arch == "llava-next":  # the LLM's input at every image token (newlines included: labelled -100)
        def image_embeds(module, args_, kwargs):
            if module.training:  # a training batch (validation batches have no labels)
                captured["v"] = kwargs["inputs_embeds"][captured["image"]]

        model.model.language_model.register_forward_pre_hook(image_embeds, with_kwargs=True)
    else:
        model.model.multi_modal_projector.register_forward_hook(
            lambda m, i, o: captured.__setitem__("v", o.flatten(0, 1)))
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step):  # linear warm-up, then cosine decay to 5 % of the peak
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    val = SyntheticTask(n=args.val, seed=2, aspect="square" if args.arch == "llava-1.5" else "mixed").samples()
    settings = {k: v for k, v in vars(args).items() if k != "out"} | ({"init_sha256": init["sha256"]} if init else {})
    state = resume.load(args.out, settings, model, heads, opt, sched) or {"step": 0, "curve": [], "wall_s": 0.0}
    resumed = state.get("resumed", []) + [state["step"]] * bool(state["step"])
    threads_from = state.get("threads_from") or ([[0, state["settings"]["threads"]]] if state["step"] else [])
    if not threads_from or threads_from[-1][1] != torch.get_num_threads():
        threads_from.append([state["step"], torch.get_num_threads()])
    if state["step"]:
        print(f"resuming {args.out} at step {state['step']}", flush=True)
    curve, start = state["curve"], time.perf_counter() - state["wall_s"]
    model.train()
    for step in range(state["step"], args.steps):
        enc, targets, aux = training_batch(processor, args.seed, step, args.batch, args.qa, args.arch)
        captured["image"] = enc["input_ids"] == model.config.image_token_id
        logits = model(**enc).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten())
        v = captured["v"]  # (all visual tokens of the batch, hidden), sample after sample
        aux_loss = sum(torch.nn.functional.cross_entropy(head(v), aux[i]) for i, head in enumerate(heads))
        (loss + args.aux_weight * aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        last = step + 1 == args.steps
        if (step + 1) % args.eval_every == 0 or last:
            acc = first_token_accuracy(model, processor, val, args.arch)
            point = {"step": step + 1, "wall_s": round(time.perf_counter() - start, 1), "loss": round(loss.item(), 4),
                     "aux_loss": round(aux_loss.item(), 4), "val": {k: round(x, 4) for k, x in acc.items()}}
            curve.append(point)
            print(json.dumps(point), flush=True)
            if not last:
                resume.save(args.out, step + 1, settings, model, heads, opt, sched, curve,
                            time.perf_counter() - start, resumed, threads_from)
    wall = time.perf_counter() - start
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    processor.tokenizer.padding_side = "left"
    processor.save_pretrained(args.out)
    record = {
        "arch": args.arch, "settings": settings,
        "sizes": SIZES[args.arch], "parameters": sum(p.numel() for p in model.parameters()),
        "train_wall_s": round(wall, 1), "images_seen": args.steps * args.batch, "resumed_at": resumed,
        "threads": torch.get_num_threads(), "threads_from": threads_from, "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(), "curve": curve,
    } | ({"init_from": init} if init else {})
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(record, f, indent=1)
    resume.clear(args.out)
    return record


def start_from(model, args) -> dict | None:
    """With ``--init-from DIR``: load the weights of a finished run in DIR into ``model`` (a second stage: the optimizer
    and the schedule start afresh) and return what ``training.json`` records of it (its path, the SHA-256 of its
    ``model.safetensors``, its own ``training.json``); else None. A directory that is not a finished run of the same
    architecture, or the output directory itself, is refused with one line."""
    if not args.init_from:
        return None
    from tokenbench.results.store import file_digest

    src = args.init_from
    weights, record = os.path.join(src, "model.safetensors"), os.path.join(src, "training.json")
    if os.path.realpath(src) == os.path.realpath(args.out):
        raise SystemExit(f"error: --init-from {src} is the output directory; write the second stage to another one")
    try:
        with open(record) as f:
            earlier = json.load(f)
        with open(weights, "rb"):
            sha = file_digest(weights)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: --init-from {src} is not a finished training run ({e}); give the --out directory of "
                         "one (model.safetensors and training.json)")
    if not isinstance(earlier, dict):
        raise SystemExit(f"error: --init-from {src}: its training.json is not a training record; give the --out "
                         "directory of a finished run")
    if earlier.get("arch") != args.arch:
        raise SystemExit(f"error: --init-from {src} is a {earlier.get('arch')} model, not {args.arch}; give a run of "
                         "the same --arch")
    trained = type(model).from_pretrained(src, use_safetensors=True)
    model.load_state_dict(trained.state_dict())
    return {"path": src, "sha256": sha, "training": earlier}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="llava-1.5", choices=sorted(SIZES))
    p.add_argument("--out", required=True, help="directory to write the trained model to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1700)
    p.add_argument("--batch", type=int, default=32, help="images per step")
    p.add_argument("--qa", type=int, default=12, help="question/answer turns packed per image")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--aux-weight", type=float, default=1.0)
    p.add_argument("--val", type=int, default=200, help="validation samples (synthetic seed 2) at each evaluation")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="start from the weights of a finished run (a second stage, with its own steps, schedule and "
                        "--seed, so that its images are new); training.json records the first stage")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's); a run is deterministic for a given thread count, and a "
                        "resumed run may change it (training.json records each segment's)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
