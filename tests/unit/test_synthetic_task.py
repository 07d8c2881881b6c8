"""The synthetic task: determinism, gold answers checked against the pixels, balance, options, registry, scoring."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from collections import Counter

import pytest
from PIL import Image, ImageChops

from tokenbench.api import TASKS
from tokenbench.errors import ConfigError
from tokenbench.contract.task import Sample, Task, normalize_answer
from tokenbench.tasks.synthetic import COLORS, SHAPES, SyntheticTask, render

WHITE = (255, 255, 255)
RGB_TO_NAME = {rgb: name for name, rgb in COLORS.items()}
QUESTION_RE = {
    "color": re.compile(r"Answer with one word\. What is the color of the (\w+)\?"),
    "shape": re.compile(r"Answer with one word\. Which shape is (\w+)\?"),
    "count": re.compile(r"Answer with a number\. How many shapes are (\w+)\?"),
    "exists": re.compile(r"Answer yes or no\. Is there a (\w+) (\w+)\?"),
}


# -- reading a scene back from the pixels (independent of the generator's own bookkeeping) --------------------------
def _box(row: int, col: int, image_size: int, grid: int) -> tuple[int, int, int, int]:
    cell = image_size // grid
    margin = max(1, cell // 10)
    return col * cell + margin, row * cell + margin, (col + 1) * cell - 1 - margin, (row + 1) * cell - 1 - margin


def _decode_cell(img: Image.Image, row: int, col: int, image_size: int, grid: int) -> tuple[str, str] | None:
    """(colour, shape) of the cell from a few probe pixels, or None for an empty cell."""
    x0, y0, x1, y1 = _box(row, col, image_size, grid)
    cx, cy, w = (x0 + x1) // 2, (y0 + y1) // 2, x1 - x0
    centre = img.getpixel((cx, cy))
    if centre == WHITE:
        return None
    assert centre in RGB_TO_NAME, f"cell ({row}, {col}) centre pixel {centre} is no task colour"
    d = max(1, round(0.05 * w))

    def on(x: int, y: int) -> bool:
        return img.getpixel((x, y)) == centre

    if on(x0 + d, y0 + d):  # top-left corner of the box: only a square reaches it
        shape = "square"
    elif on(x0 + d, y1 - d):  # bottom-left corner: the triangle's base
        shape = "triangle"
    elif on(cx - w // 4, cy - w // 4):  # on the diagonal, off the cross's bars, inside the circle
        shape = "circle"
    else:
        assert on(x0 + d, cy) and on(cx, y0 + d), f"cell ({row}, {col}) is no recognisable shape"
        shape = "cross"
    return RGB_TO_NAME[centre], shape


def _decode(sample: Sample, task: SyntheticTask) -> dict[tuple[int, int], tuple[str, str]]:
    cells = ((r, c) for r in range(task.grid) for c in range(task.grid))
    decoded = {cell: _decode_cell(sample.image, *cell, task.image_size, task.grid) for cell in cells}
    return {cell: v for cell, v in decoded.items() if v is not None}


def _key(s: Sample) -> tuple:
    return s.id, s.question, s.answer, s.meta, s.image.mode, s.image.size, s.image.tobytes()


# -- determinism ------------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_samples():
    a, b = SyntheticTask(seed=3).samples(20), SyntheticTask(seed=3).samples(20)
    assert len(a) == 20
    assert [_key(s) for s in a] == [_key(s) for s in b]


def test_sample_i_does_not_depend_on_limit_or_n():
    full = [_key(s) for s in SyntheticTask(seed=3).samples(20)]
    assert [_key(s) for s in SyntheticTask(seed=3).samples(5)] == full[:5]
    assert [_key(s) for s in SyntheticTask(seed=3, n=7).samples()] == full[:7]


def test_different_seed_gives_different_samples():
    a, b = SyntheticTask(seed=3).samples(20), SyntheticTask(seed=4).samples(20)
    assert [(s.question, s.answer) for s in a] != [(s.question, s.answer) for s in b]
    assert sum(x.image.tobytes() != y.image.tobytes() for x, y in zip(a, b)) >= 18
    assert all(s.id == f"synthetic-4-{i}" for i, s in enumerate(b))


def test_global_rng_is_neither_used_nor_disturbed():
    random.seed(1)
    state = random.getstate()
    a = [_key(s) for s in SyntheticTask().samples(16)]
    assert random.getstate() == state
    random.seed(2)
    assert [_key(s) for s in SyntheticTask().samples(16)] == a


def test_limit_and_n():
    task = SyntheticTask(n=12)
    assert len(task.samples()) == 12
    assert len(task.samples(5)) == 5
    assert len(task.samples(100)) == 12
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="limit"):
            task.samples(bad)


# -- drawing ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_size,grid", [(336, 4), (336, 2), (336, 6), (336, 8), (32, 4), (40, 5), (64, 8)])
def test_every_shape_covers_its_cell_centre_and_stays_centred_in_its_cell(image_size, grid):
    colours = list(COLORS)
    scene = {
        (r, c): (colours[(r * grid + c) % len(colours)], SHAPES[(r + c) % len(SHAPES)])
        for r in range(grid)
        for c in range(grid)
    }
    img = render(scene, image_size, grid)
    assert img.mode == "RGB" and img.size == (image_size, image_size)
    cell = image_size // grid
    for (r, c), (colour, shape) in scene.items():
        x0, y0, x1, y1 = _box(r, c, image_size, grid)
        assert img.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == COLORS[colour], (r, c, shape)
        crop = img.crop((c * cell, r * cell, (c + 1) * cell, (r + 1) * cell))
        left, top, right, bottom = ImageChops.difference(crop, Image.new("RGB", crop.size, WHITE)).getbbox()
        assert left >= 1 and top >= 1 and right <= cell - 1 and bottom <= cell - 1, "shape touches its cell's edge"
        assert right - left >= 0.7 * cell and bottom - top >= 0.7 * cell, f"{shape} fills too little of its cell"
        assert abs(left - (cell - right)) <= 1 and abs(top - (cell - bottom)) <= 1, f"{shape} is not centred"
        if cell >= 40:
            assert _decode_cell(img, r, c, image_size, grid) == (colour, shape)
            _check_area_and_symmetry(img, (x0, y0, x1, y1), COLORS[colour], shape)
    assert _only_task_colours(img)


#: fraction of its box a shape covers: square 1, circle pi/4, triangle 1/2, cross (bars a quarter thick) ~7/16
AREA = {"square": 1.0, "circle": 0.785, "triangle": 0.5, "cross": 0.44}


def _check_area_and_symmetry(img: Image.Image, box: tuple[int, int, int, int], rgb: tuple, shape: str) -> None:
    x0, y0, x1, y1 = box
    on = [(x, y) for y in range(y0, y1 + 1) for x in range(x0, x1 + 1) if img.getpixel((x, y)) == rgb]
    area = len(on) / ((x1 - x0 + 1) * (y1 - y0 + 1))
    assert abs(area - AREA[shape]) < 0.07, f"{shape} covers {area:.2f} of its box, expected ~{AREA[shape]}"
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = sum(x < cx for x, _ in on), sum(y < cy for _, y in on)
    right, bottom = sum(x > cx for x, _ in on), sum(y > cy for _, y in on)
    assert abs(left - right) <= 0.05 * len(on), f"{shape} is lopsided left/right"
    if shape != "triangle":
        assert abs(top - bottom) <= 0.05 * len(on), f"{shape} is lopsided top/bottom"


def _only_task_colours(img: Image.Image) -> bool:
    """No anti-aliasing, outlines or other colours: every pixel is the background or a task colour."""
    return {rgb for _, rgb in img.getcolors(maxcolors=1 << 16)} <= set(COLORS.values()) | {WHITE}


def test_colours_are_distinct_and_not_the_background():
    assert len(set(COLORS.values())) == len(COLORS) == 5
    assert WHITE not in COLORS.values()
    assert set(SHAPES) == {"square", "circle", "triangle", "cross"}


# -- gold answers, checked against the image ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options", [{}, {"seed": 5, "grid": 12}, {"seed": 1, "grid": 8, "max_objects": 19}, {"seed": 2, "max_objects": 2}]
)
def test_gold_answers_match_the_pixels(options):
    task = SyntheticTask(**options)
    samples = task.samples()
    exists_no = 0
    for i, s in enumerate(samples):
        assert s.id == f"synthetic-{task.seed}-{i}"
        assert s.image.mode == "RGB" and s.image.size == (task.image_size, task.image_size)
        assert _only_task_colours(s.image), s.id
        scene = _decode(s, task)
        assert scene, f"{s.id}: no occupied cell"
        kind = s.meta["type"]
        m = QUESTION_RE[kind].fullmatch(s.question)
        assert m, f"{s.id}: question {s.question!r} does not match the {kind} template"
        assert task.min_objects <= len(scene) <= task.max_objects, s.id
        if kind in ("color", "shape"):  # the one object with the asked shape (colour) has the answer
            asked = 1 if kind == "color" else 0
            assert m[1] in (SHAPES if kind == "color" else COLORS)
            holders = [cell for cell, v in scene.items() if v[asked] == m[1]]
            assert len(holders) == 1, f"{s.id}: {len(holders)} objects match {m[1]!r}, expected exactly one"
            (row, col), = holders
            assert (s.meta["row"], s.meta["col"]) == (row + 1, col + 1)
            assert scene[row, col][1 - asked] == s.answer, s.id
        elif kind == "count":
            assert m[1] in COLORS and s.meta["color"] == m[1]
            assert s.answer == str(sum(colour == m[1] for colour, _ in scene.values())), s.id
        else:
            assert m[1] in COLORS and m[2] in SHAPES and (s.meta["color"], s.meta["shape"]) == (m[1], m[2])
            assert s.answer == ("yes" if (m[1], m[2]) in scene.values() else "no"), s.id
            exists_no += s.answer == "no"
    assert exists_no >= 20  # the 'no' half survives even on grids that hold every colour/shape combination


def test_gold_answers_are_single_normalised_words():
    task = SyntheticTask()
    assert task.max_new_tokens == 4 and task.name == "synthetic" and task.version == "2"
    for s in task.samples():
        assert re.fullmatch(r"[a-z]+|\d+", s.answer), s.answer
        assert normalize_answer(s.answer) == s.answer


# -- balance ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_question_types_and_answers_are_balanced(seed):
    samples = SyntheticTask(seed=seed).samples()
    types = Counter(s.meta["type"] for s in samples)
    assert set(types) == {"color", "shape", "count", "exists"}
    assert all(0.20 <= v / len(samples) <= 0.30 for v in types.values()), types
    exists = [s.answer for s in samples if s.meta["type"] == "exists"]
    assert 0.35 <= exists.count("yes") / len(exists) <= 0.65
    counts = [s.answer for s in samples if s.meta["type"] == "count"]
    assert counts.count("0") / len(counts) <= 0.4 and len(set(counts)) >= 3
    cells = Counter((s.meta["row"], s.meta["col"]) for s in samples if s.meta["type"] in ("color", "shape"))
    assert len(cells) >= 20  # the asked-about object sits anywhere on the grid, not in one favourite slot
    assert len({s.answer for s in samples if s.meta["type"] == "color"}) == 5
    assert len({s.answer for s in samples if s.meta["type"] == "shape"}) == 4


@pytest.mark.parametrize("seed", [0, 3])
def test_every_block_of_eight_samples_is_exactly_balanced(seed):
    """Short runs (--limit 8, 16, ...) see every question type twice per 8 samples and one yes/no exists pair."""
    samples = SyntheticTask(seed=seed, n=64).samples()
    orders = set()
    for start in range(0, 64, 8):
        block = samples[start : start + 8]
        types = [s.meta["type"] for s in block]
        orders.add(tuple(types))
        assert Counter(types) == {"color": 2, "shape": 2, "count": 2, "exists": 2}
        assert sorted(s.answer for s in block if s.meta["type"] == "exists") == ["no", "yes"]
    assert len(orders) >= 4  # the order within a block is shuffled, not a fixed pattern


@pytest.mark.parametrize("max_objects", [6, 2])
def test_every_block_of_eight_has_a_count_question_about_a_colour_on_the_grid(max_objects):
    """One count question in each block asks for the colour of an object on the image, so answers are not mostly 0."""
    samples = SyntheticTask(max_objects=max_objects).samples()
    for start in range(0, len(samples), 8):
        counts = [int(s.answer) for s in samples[start : start + 8] if s.meta["type"] == "count"]
        assert max(counts) >= 1, f"block at {start}: every count answer is 0"


def test_count_questions_ask_about_every_colour():
    samples = SyntheticTask().samples()
    assert {s.meta["color"] for s in samples if s.meta["type"] == "count"} == set(COLORS)
    assert {s.meta["color"] for s in samples if s.meta["type"] == "exists"} == set(COLORS)
    assert {s.meta["shape"] for s in samples if s.meta["type"] == "exists"} == set(SHAPES)


def test_generation_is_fast():
    start = time.perf_counter()
    SyntheticTask().samples()
    assert time.perf_counter() - start < 2.0


# -- options ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options,option",
    [
        ({"grid": 1}, "grid"),
        ({"n": 0}, "n"),
        ({"image_size": 100, "grid": 3}, "image_size"),
        ({"image_size": 16, "grid": 2}, "image_size"),
        ({"min_objects": 0}, "min_objects"),
        ({"min_objects": 4, "max_objects": 3}, "max_objects"),
        ({"grid": 2, "max_objects": 5}, "max_objects"),
        ({"max_objects": 20}, "max_objects"),
        ({"n": 2.5}, "n"),
    ],
)
def test_bad_options_raise_config_error_naming_the_option(options, option):
    with pytest.raises(ConfigError, match=f"'{option}'"):
        SyntheticTask(**options)


def test_options_are_frozen():
    task = SyntheticTask()
    with pytest.raises(AttributeError):
        task.n = 3  # type: ignore[misc]


# -- registry, scoring, imports ---------------------------------------------------------------------------------------
def test_registered_as_synthetic():
    assert TASKS.get("synthetic") is SyntheticTask
    assert "synthetic" in TASKS.names()
    assert isinstance(TASKS.get("synthetic")(n=3), Task)


def test_score_reuses_the_normalised_first_word():
    task = SyntheticTask()
    sample = Sample(id="x", image=None, question="?", answer="red")
    assert task.score(sample, "Red.") == 1.0
    assert task.score(sample, "blue") == 0.0
    first = task.samples(1)[0]
    assert task.score(first, f" {first.answer.upper()}! it is") == 1.0


def test_module_imports_no_torch():
    code = "import sys, tokenbench.tasks.synthetic; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_questions_are_answered_by_their_scene():
    """qa_pairs (the mini models' packed training turns) asks only answerable questions, with the scene's answers."""
    from tokenbench.tasks.synthetic import QUESTION_TYPES, qa_pairs, scene_for

    for i in range(40):
        rng = random.Random(f"qa-{i}")
        qtype = QUESTION_TYPES[i % 4]
        scene, target = scene_for(qtype, rng, 6, rng.randint(2, 6))
        for question, answer in qa_pairs(scene, target, qtype, rng, 12):
            kind = next(k for k, rx in QUESTION_RE.items() if rx.fullmatch(question))
            m = QUESTION_RE[kind].fullmatch(question)
            if kind in ("color", "shape"):
                asked = 1 if kind == "color" else 0
                holders = [v for v in scene.values() if v[asked] == m[1]]
                assert len(holders) == 1 and holders[0][1 - asked] == answer, (question, scene)
            elif kind == "count":
                assert answer == str(sum(c == m[1] for c, _ in scene.values()))
            else:
                assert answer == ("yes" if (m[1], m[2]) in scene.values() else "no")
