"""The ``synthetic`` task: coloured shapes on a grid, with questions whose answers depend on where the shapes are.

Each image is a white square cut into ``grid`` x ``grid`` cells; each cell holds, with probability ``fill``, one
shape (square, circle, triangle, cross) of one colour (red, green, blue, yellow, purple), centred and filling most
of its cell. Four question types, a quarter of the samples each:

* ``color``  "What color is the shape in row 2 column 3? Answer with one word."  -> ``red``
* ``shape``  "What shape is in row 2 column 3? Answer with one word."  -> ``circle``
* ``count``  "How many blue shapes are there? Answer with a number."  -> ``3``
* ``exists`` "Is there a green cross? Answer yes or no."  -> ``yes`` / ``no`` (half each)

``aspect="mixed"`` stretches each image to one of four aspect ratios (drawn per sample after its scene), so
LLaVA-NeXT and Qwen2.5-VL see different visual-token counts and layouts in one split.

The answer to a ``color``/``shape`` question lives in the few visual tokens that cover one named cell, and a
``count``/``exists`` answer needs every occupied cell: a method that drops the wrong visual tokens loses exactly the
patches that hold the answer, so accuracy measures *which* tokens a method keeps, not only how many.

Everything is generated offline from ``random.Random``: sample ``i`` uses its own generator seeded with
``"synthetic-{seed}-{i}"`` (the question-type plan uses one per block of 8 samples), so a sample is the same whatever
``limit`` or ``n`` is, and nothing touches the global RNG. Drawing uses no anti-aliasing: every shape pixel has its
colour's exact RGB and every cell centre is covered by its shape.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from tokenbench.api import register_task
from tokenbench.errors import ConfigError
from tokenbench.task import Sample, Task

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
# One block of 8 samples, shuffled per block: each type twice; the flag picks count's colour from an occupied cell
# (True) or at random (False), and whether the exists question is built to be answered yes (True) or no (False).
_PLAN = (("color", None), ("color", None), ("shape", None), ("shape", None),
         ("count", True), ("count", False), ("exists", True), ("exists", False))  # fmt: skip

#: width:height ratios (in sixths of image_size) of ``aspect="mixed"``: square, landscape, portrait, panorama
ASPECTS: tuple[tuple[int, int], ...] = ((6, 6), (8, 6), (6, 8), (9, 5))
Scene = dict[tuple[int, int], tuple[str, str]]  # (row, col), 0-based -> (colour, shape)


def render(scene: Scene, image_size: int, grid: int) -> Image.Image:
    """Draw ``scene`` on a white RGB image: each shape centred in its cell, inside a margin of a tenth of the cell."""
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


@register_task("synthetic")
@dataclass(frozen=True)
class SyntheticTask(Task):
    """Coloured shapes on a grid; ``color``/``shape``/``count``/``exists`` questions with exact one-word answers."""

    name = "synthetic"
    version = "1"
    max_new_tokens = 4

    n: int = 200  # number of samples in the split
    seed: int = 0  # generation seed; sample i depends only on (seed, i)
    image_size: int = 336  # side of the square image in pixels; 336 gives LLaVA-1.5's 24x24 patch grid
    grid: int = 4  # cells per side of the shape grid
    fill: float = 0.5  # probability that a cell holds a shape (at least one cell always does)
    aspect: str = "square"  # "mixed": each image resized to one of ASPECTS (for dynamic-resolution models)

    def __post_init__(self) -> None:
        for key in ("n", "seed", "image_size", "grid"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"synthetic task option {key!r} must be an integer, got {value!r}")
        if self.n < 1:
            raise ConfigError(f"synthetic task option 'n' must be >= 1 (number of samples), got {self.n!r}")
        if self.grid < 2:
            raise ConfigError(f"synthetic task option 'grid' must be >= 2 (cells per side), got {self.grid!r}")
        if self.image_size < 32 or self.image_size % self.grid:
            raise ConfigError(
                f"synthetic task option 'image_size' must be >= 32 and divisible by grid={self.grid}, "
                f"got {self.image_size!r} (for example 336 with grid 2, 3, 4, 6, 7 or 8)"
            )
        if self.image_size // self.grid < 8:
            raise ConfigError(
                f"synthetic task options 'image_size'/'grid' give cells of {self.image_size // self.grid} px; "
                "cells must be >= 8 px (raise image_size or lower grid)"
            )
        if self.aspect not in ("square", "mixed"):
            raise ConfigError(f"synthetic task option 'aspect' must be 'square' or 'mixed', got {self.aspect!r}")
        if isinstance(self.fill, bool) or not isinstance(self.fill, (int, float)) or not 0 < self.fill <= 1:
            raise ConfigError(f"synthetic task option 'fill' must be a probability in (0, 1], got {self.fill!r}")

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
        colours = list(COLORS)
        cells = [(r, c) for r in range(self.grid) for c in range(self.grid)]
        scene: Scene = {}
        for cell in cells:
            if rng.random() < self.fill:
                scene[cell] = (rng.choice(colours), rng.choice(SHAPES))
        if not scene:
            scene[rng.choice(cells)] = (rng.choice(colours), rng.choice(SHAPES))
        meta: dict = {"type": qtype}
        if qtype in ("color", "shape"):
            (row, col) = rng.choice(sorted(scene))
            meta.update(row=row + 1, col=col + 1)
            if qtype == "color":
                question = f"What color is the shape in row {row + 1} column {col + 1}? Answer with one word."
                answer = scene[row, col][0]
            else:
                question = f"What shape is in row {row + 1} column {col + 1}? Answer with one word."
                answer = scene[row, col][1]
        elif qtype == "count":
            colour = scene[rng.choice(sorted(scene))][0] if flag else rng.choice(colours)
            meta.update(color=colour)
            question = f"How many {colour} shapes are there? Answer with a number."
            answer = str(sum(c == colour for c, _ in scene.values()))
        else:
            present = sorted(set(scene.values()))
            if flag:
                colour, shape = rng.choice(present)
            else:
                absent = [(c, s) for c in colours for s in SHAPES if (c, s) not in present]
                if not absent:  # every combination is on the grid (large grids): take one off to ask for it
                    gone = rng.choice(present)
                    scene = {cell: v for cell, v in scene.items() if v != gone}
                    absent = [gone]
                colour, shape = rng.choice(absent)
            meta.update(color=colour, shape=shape)
            question = f"Is there a {colour} {shape}? Answer yes or no."
            answer = "yes" if (colour, shape) in scene.values() else "no"
        image = render(scene, self.image_size, self.grid)
        if self.aspect == "mixed":  # stretched, not cropped: every cell and its answer stay in the picture
            w, h = ASPECTS[rng.randrange(len(ASPECTS))]
            image = image.resize((self.image_size * w // 6, self.image_size * h // 6), Image.NEAREST)
        return Sample(id=f"synthetic-{self.seed}-{i}", image=image, question=question, answer=answer, meta=meta)
