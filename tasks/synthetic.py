"""The ``synthetic`` task: a few small coloured shapes scattered on a white image, with questions whose answer lives in
the few visual tokens of one object, or of the objects of one kind.

Each image is a white square cut into ``grid`` x ``grid`` slots (336 px and grid 6: 56 px slots, exactly 4 x 4 patches
of LLaVA-1.5's 14 px grid, 16 of its 576 visual tokens); ``min_objects``..``max_objects`` slots (2 to 6), drawn at
random, each hold one shape (square, circle, triangle, cross) of one colour (red, green, blue, yellow, purple). The
rest, 80 % or more of the image, is background. Four question
types, a quarter of the samples each:

* ``color``  "Answer with one word. What is the color of the circle?"  -> ``red``: exactly one circle on the image
* ``shape``  "Answer with one word. Which shape is blue?"  -> ``cross``: exactly one blue object
* ``count``  "Answer with a number. How many shapes are green?"  -> ``2``
* ``exists`` "Answer yes or no. Is there a yellow square?"  -> ``yes`` / ``no`` (half each)

The instruction comes first and the word that names what to look for comes last, right before the answer is read
(the "last key" phrasing that let small models trained from scratch learn the lookup,
``../shared/docs/transformers-notes.md`` §Q5).

The answer to a ``color``/``shape`` question sits in the visual tokens of one object whose place changes from image
to image and is found only by reading the question (the only object of a kind); ``count``/``exists`` need every
object of a colour. Most tokens are background, so a method that keeps the right few tokens keeps the answer and
one that keeps the wrong ones loses it: accuracy measures *which* tokens a method keeps, not only how many.

``aspect="mixed"`` stretches each image to one of four aspect ratios (drawn per sample after its scene), so
LLaVA-NeXT and Qwen2.5-VL see different visual-token counts and layouts in one split.

Everything is generated offline from ``random.Random``: sample ``i`` uses its own generator seeded with
``"synthetic-{seed}-{i}"`` (the question-type plan uses one per block of 8 samples), so a sample is the same whatever
``limit`` or ``n`` is, and nothing touches the global RNG. Drawing uses no anti-aliasing: every shape pixel has its
colour's exact RGB and every slot centre is covered by its shape. :func:`qa_pairs` draws further questions about one
scene (the mini models' training packs several per image); held-out splits and training never share a seed string.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from tokenbench.api import register_task
from tokenbench.errors import ConfigError
from tokenbench.contract.task import Sample, Task

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 0),
    "purple": (140, 50, 170),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "exists")
BACKGROUND = (255, 255, 255)
# One block of 8 samples, shuffled per block: each type twice; the flag picks count's colour from an object on the
# image (True) or at random (False), and whether the exists question is built to be answered yes (True) or no (False).
_PLAN = (("color", None), ("color", None), ("shape", None), ("shape", None),
         ("count", True), ("count", False), ("exists", True), ("exists", False))  # fmt: skip

#: width:height ratios (in sixths of image_size) of ``aspect="mixed"``: square, landscape, portrait, panorama
ASPECTS: tuple[tuple[int, int], ...] = ((6, 6), (8, 6), (6, 8), (9, 5))
Scene = dict[tuple[int, int], tuple[str, str]]  # (row, col) slot, 0-based -> (colour, shape)


def render(scene: Scene, image_size: int, grid: int) -> Image.Image:
    """Draw ``scene`` on a white RGB image: each shape centred in its slot, inside a margin of a tenth of the slot."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = image_size // grid
    margin = max(1, cell // 10)
    for (row, col), (colour, shape) in scene.items():
        x0, y0 = col * cell + margin, row * cell + margin
        x1, y1 = (col + 1) * cell - 1 - margin, (row + 1) * cell - 1 - margin
        cx, cy, rgb = (x0 + x1) // 2, (y0 + y1) // 2, COLORS[colour]
        if shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=rgb)
        elif shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=rgb)
        elif shape == "triangle":  # apex top centre, base along the bottom: half as wide as the base at mid-height
            draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=rgb)
        else:  # cross: two bars a quarter of the box thick, both through the centre
            half = max(1, (x1 - x0) // 8)
            draw.rectangle((x0, cy - half, x1, cy + half), fill=rgb)
            draw.rectangle((cx - half, y0, cx + half, y1), fill=rgb)
    return image


def scene_for(qtype: str, rng: random.Random, grid: int, n_objects: int) -> tuple[Scene, tuple[int, int] | None]:
    """A scene of ``n_objects`` objects in distinct random slots. For ``color`` (``shape``) questions one target object
    is the only one of its shape (colour); it is returned with the scene, else ``None``."""
    colours = list(COLORS)
    slots = rng.sample([(r, c) for r in range(grid) for c in range(grid)], n_objects)
    target = slots[0] if qtype in ("color", "shape") else None
    scene: Scene = {}
    first = (rng.choice(colours), rng.choice(SHAPES))
    for slot in slots:
        if slot == target:
            scene[slot] = first
        elif qtype == "color":  # every other object has another shape
            scene[slot] = (rng.choice(colours), rng.choice([s for s in SHAPES if s != first[1]]))
        elif qtype == "shape":  # every other object has another colour
            scene[slot] = (rng.choice([c for c in colours if c != first[0]]), rng.choice(SHAPES))
        else:
            scene[slot] = (rng.choice(colours), rng.choice(SHAPES))
    if target is None:
        scene[slots[0]] = first
    return scene, target


def question_for(qtype: str, flag, scene: Scene, target, rng: random.Random) -> tuple[str, str, dict]:
    """(question, gold answer, meta) of one question of ``qtype`` about ``scene`` (see the module docstring)."""
    colours = list(COLORS)
    meta: dict = {"type": qtype}
    if qtype == "color":
        colour, shape = scene[target]
        meta.update(row=target[0] + 1, col=target[1] + 1, shape=shape)
        return f"Answer with one word. What is the color of the {shape}?", colour, meta
    if qtype == "shape":
        colour, shape = scene[target]
        meta.update(row=target[0] + 1, col=target[1] + 1, color=colour)
        return f"Answer with one word. Which shape is {colour}?", shape, meta
    if qtype == "count":
        colour = scene[rng.choice(sorted(scene))][0] if flag else rng.choice(colours)
        meta.update(color=colour)
        return (f"Answer with a number. How many shapes are {colour}?",
                str(sum(c == colour for c, _ in scene.values())), meta)
    present = sorted(set(scene.values()))
    if flag:
        colour, shape = rng.choice(present)
    else:
        colour, shape = rng.choice([(c, s) for c in colours for s in SHAPES if (c, s) not in present])
    meta.update(color=colour, shape=shape)
    return f"Answer yes or no. Is there a {colour} {shape}?", "yes" if flag else "no", meta


@register_task("synthetic")
@dataclass(frozen=True)
class SyntheticTask(Task):
    """Small coloured shapes on a white image; ``color``/``shape``/``count``/``exists`` questions, one-word answers."""

    name = "synthetic"
    version = "2"
    max_new_tokens = 4

    n: int = 200  # number of samples in the split
    seed: int = 0  # generation seed; sample i depends only on (seed, i)
    image_size: int = 336  # side of the square image in pixels; 336 gives LLaVA-1.5's 24x24 patch grid
    grid: int = 6  # object slots per side (6 at 336 px: one slot = 4x4 LLaVA-1.5 patches, 16 of its 576 tokens)
    min_objects: int = 2  # objects per image, drawn uniformly from min_objects..max_objects
    max_objects: int = 6
    aspect: str = "square"  # "mixed": each image resized to one of ASPECTS (for dynamic-resolution models)

    def __post_init__(self) -> None:
        for key in ("n", "seed", "image_size", "grid", "min_objects", "max_objects"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"synthetic task option {key!r} must be an integer, got {value!r}")
        if self.n < 1:
            raise ConfigError(f"synthetic task option 'n' must be >= 1 (number of samples), got {self.n!r}")
        if self.grid < 2:
            raise ConfigError(f"synthetic task option 'grid' must be >= 2 (slots per side), got {self.grid!r}")
        if self.image_size < 32 or self.image_size % self.grid:
            raise ConfigError(
                f"synthetic task option 'image_size' must be >= 32 and divisible by grid={self.grid}, "
                f"got {self.image_size!r} (for example 336 with grid 4, 6, 8, 12 or 24)"
            )
        if self.image_size // self.grid < 8:
            raise ConfigError(
                f"synthetic task options 'image_size'/'grid' give slots of {self.image_size // self.grid} px; "
                "slots must be >= 8 px (raise image_size or lower grid)"
            )
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError(
                f"synthetic task options 'min_objects'/'max_objects' must satisfy 1 <= min_objects <= max_objects, "
                f"got {self.min_objects!r}/{self.max_objects!r}"
            )
        most = min(self.grid * self.grid, len(COLORS) * len(SHAPES) - 1)
        if self.max_objects > most:
            raise ConfigError(
                f"synthetic task option 'max_objects' must be <= {most} (the slots, and one colour/shape combination "
                f"left absent for 'no' answers), got {self.max_objects!r}"
            )
        if self.aspect not in ("square", "mixed"):
            raise ConfigError(f"synthetic task option 'aspect' must be 'square' or 'mixed', got {self.aspect!r}")

    def samples(self, limit: int | None = None) -> list[Sample]:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit must be a positive integer or None (all {self.n} samples), got {limit!r}")
        count = self.n if limit is None else min(limit, self.n)
        return [self._sample(i) for i in range(count)]

    def _sample(self, i: int) -> Sample:
        plan = list(_PLAN)
        random.Random(f"synthetic-{self.seed}-block-{i // len(plan)}").shuffle(plan)
        qtype, flag = plan[i % len(plan)]
        rng = random.Random(f"synthetic-{self.seed}-{i}")
        scene, target = scene_for(qtype, rng, self.grid, rng.randint(self.min_objects, self.max_objects))
        question, answer, meta = question_for(qtype, flag, scene, target, rng)
        image = render(scene, self.image_size, self.grid)
        if self.aspect == "mixed":  # stretched, not cropped: every object and its answer stay in the picture
            w, h = ASPECTS[rng.randrange(len(ASPECTS))]
            image = image.resize((self.image_size * w // 6, self.image_size * h // 6), Image.NEAREST)
        return Sample(id=f"synthetic-{self.seed}-{i}", image=image, question=question, answer=answer, meta=meta)


def qa_pairs(scene: Scene, target, qtype: str, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """``n`` questions with answers about one scene: the scene's own type first, then types drawn at random. A
    ``color`` (``shape``) question asks about an object that is the only one of its shape (colour) in the scene."""
    out = [question_for(qtype, rng.random() < 0.5, scene, target, rng)[:2]]
    unique = {kind: [slot for slot, v in scene.items() if sum(w[i] == v[i] for w in scene.values()) == 1]
              for i, kind in ((1, "color"), (0, "shape"))}
    kinds = [k for k in QUESTION_TYPES if unique.get(k, True)]
    while len(out) < n:
        kind = rng.choice(kinds)
        slot = rng.choice(unique[kind]) if kind in unique else None
        out.append(question_for(kind, rng.random() < 0.5, scene, slot, rng)[:2])
    return out
