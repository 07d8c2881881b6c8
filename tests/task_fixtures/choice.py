"""Fixtures of the multiple-choice tasks: a few rows each in the schema of the hub split the task reads.

- ``scienceqa_img``: lmms-lab(-encoder)/ScienceQA, config ScienceQA-IMG, test: image, question, choices (list of
  strings), answer (int8: the 0-based index of the right choice), hint ("" when none), task, grade, subject, topic,
  category, skill, lecture, solution;
- ``ai2d``: lmms-lab(-encoder)/ai2d, test: question, options (list of strings), answer (string "0".."3"), image;
- ``mmbench_en``: lmms-lab(-encoder)/MMBench, config en, dev: index (int64), question, hint (None when none), answer
  (letter), A, B, C, D (None past the last option), category, image, source, L2-category, comment, split. Each
  question's circular rotations are rows of their own with index + k * 1e6 (options shifted by k, answer moved with
  them); the rows come main questions first, then their rotations, so a reader must group them itself;
- ``seedbench``: lmms-lab(-encoder)/SEED-Bench, test: answer (letter), choice_a..choice_d, data_id, data_type
  ("image" or "video"), question, question_id (string), question_type_id (int16), image (a list of images: one for an
  image question, the video's 8 frames for a video question), segment (a list of ints, None for images; the hub
  schema's column as remembered, not checked offline: no task reads it);
- ``realworldqa``: lmms-lab(-encoder)/RealWorldQA, test: image, question (the options and the answer instruction are in
  the question text), answer (a letter, or a word or number for the open questions).

:func:`with_corrupt_image` replaces one row's image bytes by bytes no decoder reads.
"""

from __future__ import annotations

import datasets

from tokenbench.testing import fixture_image

STR = datasets.Value("string")


def _img(seed: int, size=(64, 48)):
    return fixture_image(seed, size)


# -- ScienceQA-IMG ---------------------------------------------------------------------------------------------------
SCIENCEQA_FEATURES = datasets.Features({
    "image": datasets.Image(), "question": STR, "choices": datasets.List(STR), "answer": datasets.Value("int8"),
    "hint": STR, "task": STR, "grade": STR, "subject": STR, "topic": STR, "category": STR, "skill": STR,
    "lecture": STR, "solution": STR,
})


def scienceqa_img() -> datasets.Dataset:
    rows = [
        ("Which of these states is farthest north?", ["West Virginia", "Louisiana", "Arizona", "Oklahoma"], 0, "",
         "social science", "Geography"),
        ("Which animal's feet are also adapted for swimming?", ["duck", "tokay gecko"], 0,
         "Ducks live near water. Their feet are adapted for swimming.", "natural science", "Adaptations"),
        ("Identify the question that Tom's experiment can best answer.",
         ["Do more bacteria grow in liquid with cinnamon than in liquid without cinnamon?",
          "Does temperature affect how much bacteria can grow in liquid?"], 1,
         "The passage below describes an experiment.", "natural science", "Designing experiments"),
        ("What is the capital of Utah?", ["Salt Lake City", "Provo", "Olympia"], 0, "", "social science",
         "Geography"),
        ("Which material is this spatula made of?", ["rubber", "cotton", "wool", "glass", "steel"], 4,
         "Select the best answer.", "natural science", "Materials"),
    ]
    data = {k: [] for k in SCIENCEQA_FEATURES}
    for i, (question, choices, answer, hint, subject, topic) in enumerate(rows):
        data["image"].append(_img(100 + i, (60 + 4 * i, 40 + 2 * i)))
        data["question"].append(question)
        data["choices"].append(choices)
        data["answer"].append(answer)
        data["hint"].append(hint)
        data["task"].append("closed choice")
        data["grade"].append(f"grade{3 + i}")
        data["subject"].append(subject)
        data["topic"].append(topic.lower())
        data["category"].append(topic)
        data["skill"].append(f"skill {i}")
        data["lecture"].append("A lecture.")
        data["solution"].append("A solution.")
    return datasets.Dataset.from_dict(data, features=SCIENCEQA_FEATURES)


# -- AI2D --------------------------------------------------------------------------------------------------------------
AI2D_FEATURES = datasets.Features({"question": STR, "options": datasets.List(STR), "answer": STR,
                                   "image": datasets.Image()})


def ai2d() -> datasets.Dataset:
    rows = [
        ("which of these define dairy item", ["c", "D", "b", "a"], "1"),
        ("What stage is represented by label E?", ["egg", "pupa", "larva", "adult"], "3"),
        ("Which organism is a producer?", ["grass", "hawk", "snake", "frog"], "0"),
        ("How many legs does the insect have?", ["6", "8", "4", "2"], "0"),
        ("What does the arrow show?", ["energy flow", "water", "light", "none of the above"], "2"),
    ]
    return datasets.Dataset.from_dict({
        "question": [r[0] for r in rows], "options": [r[1] for r in rows], "answer": [r[2] for r in rows],
        "image": [_img(200 + i, (50 + 6 * i, 50)) for i in range(len(rows))],
    }, features=AI2D_FEATURES)


# -- MMBench (en, dev) -------------------------------------------------------------------------------------------------
MMBENCH_FEATURES = datasets.Features({
    "index": datasets.Value("int64"), "question": STR, "hint": STR, "answer": STR, "A": STR, "B": STR, "C": STR,
    "D": STR, "category": STR, "image": datasets.Image(), "source": STR, "L2-category": STR, "comment": STR,
    "split": STR,
})

#: (question, hint, options, index of the right option, category, L2-category)
MMBENCH_QUESTIONS = [
    ("What is the main object in the image?", None, ["teddy bear", "rabbit", "cat", "dog"], 0,
     "image_scene", "coarse_perception"),
    ("Which direction is the arrow pointing?", "The picture shows a road sign.", ["left", "right"], 1,
     "spatial_relationship", "relation_reasoning"),
    ("What emotion does the person show?", None, ["happy", "sad", "angry"], 2,
     "image_emotion", "coarse_perception"),
]


def mmbench_rows() -> list[dict]:
    """The rows in hub order: every main question (index i), then every first rotation (1e6 + i), and so on; rotation
    k shifts the options by k (option k comes first) and moves the answer with them."""
    rows = []
    most = max(len(q[2]) for q in MMBENCH_QUESTIONS)
    for k in range(most):
        for i, (question, hint, options, right, cat, l2) in enumerate(MMBENCH_QUESTIONS):
            n = len(options)
            if k >= n:
                continue
            shifted = options[k:] + options[:k]
            letters = {c: (shifted[j] if j < n else None) for j, c in enumerate("ABCD")}
            rows.append({"index": k * 1_000_000 + i, "question": question, "hint": hint,
                         "answer": "ABCD"[(right - k) % n], **letters, "category": cat,
                         "image": _img(300 + i, (56 + 8 * i, 42)), "source": "MMBench", "L2-category": l2,
                         "comment": None, "split": "dev"})
    return rows


def mmbench_en() -> datasets.Dataset:
    rows = mmbench_rows()
    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in MMBENCH_FEATURES}, features=MMBENCH_FEATURES)


#: the hub's ``en`` config stores ``index`` as a string of digits ("0", "1000000", ...); the ``cn`` config as int64
MMBENCH_STRING_INDEX_FEATURES = datasets.Features({**MMBENCH_FEATURES, "index": STR})


def mmbench_en_string_index() -> datasets.Dataset:
    """:func:`mmbench_en` with ``index`` a string column, as the hub's ``en`` config has it (same rows, same order)."""
    rows = [{**r, "index": str(r["index"])} for r in mmbench_rows()]
    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in MMBENCH_STRING_INDEX_FEATURES},
                                      features=MMBENCH_STRING_INDEX_FEATURES)


# -- SEED-Bench --------------------------------------------------------------------------------------------------------
SEED_FEATURES = datasets.Features({
    "answer": STR, "choice_a": STR, "choice_b": STR, "choice_c": STR, "choice_d": STR, "data_id": STR,
    "data_type": STR, "question": STR, "question_id": STR, "question_type_id": datasets.Value("int16"),
    "image": datasets.List(datasets.Image()), "segment": datasets.List(datasets.Value("int64")),
})


def seedbench() -> datasets.Dataset:
    rows = [  # (data_type, question, choices, answer, question_type_id)
        ("image", "How many towels are in the image?", ["One", "Two", "Three", "Four"], "A", 5),
        ("video", "What is the action being carried out in the video?",
         ["Pushing something", "Pulling something", "Throwing something", "Lifting something"], "C", 10),
        ("image", "What is the color of the car?", ["Red", "Blue", "Green", "White"], "B", 2),
        ("image", "Where is the cat relative to the sofa?", ["On it", "Under it", "Beside it", "Behind it"], "D", 6),
        ("video", "What happens after the door opens?", ["A dog runs", "A man enters", "Lights go off", "Nothing"],
         "B", 11),
        ("image", "What is the scene of the image?", ["A beach", "A kitchen", "A forest", "A street"], "C", 1),
    ]
    data = {k: [] for k in SEED_FEATURES}
    for i, (kind, question, choices, answer, qtype) in enumerate(rows):
        data["answer"].append(answer)
        for letter, text in zip("abcd", choices):
            data[f"choice_{letter}"].append(text)
        data["data_id"].append(f"{1454426 + i}_{2591111986 + i}" if kind == "image" else f"v{i}.mp4")
        data["data_type"].append(kind)
        data["question"].append(question)
        data["question_id"].append(str(101669 + i))
        data["question_type_id"].append(qtype)
        frames = 1 if kind == "image" else 8
        data["image"].append([_img(400 + 10 * i + f, (40 + 4 * i, 30)) for f in range(frames)])
        data["segment"].append(None if kind == "image" else [0, 120])
    return datasets.Dataset.from_dict(data, features=SEED_FEATURES)


# -- RealWorldQA -------------------------------------------------------------------------------------------------------
REALWORLDQA_FEATURES = datasets.Features({"image": datasets.Image(), "question": STR, "answer": STR})
_RWQA_LETTER = "Please answer directly with only the letter of the correct option and nothing else."
_RWQA_WORD = "Please answer directly with a single word or number."


def realworldqa() -> datasets.Dataset:
    rows = [
        (f"In which direction is the front wheel of the car on the right side facing?\n\nA. Left\nB. Straight\n"
         f"C. Right\n\n{_RWQA_LETTER}", "C"),
        (f"How many lanes are there on this road?\n\n{_RWQA_WORD}", "2"),
        (f"Is the traffic light green?\n\nA. Yes\nB. No\n\n{_RWQA_LETTER}", "A"),
        (f"Is the road going uphill or downhill?\n\n{_RWQA_WORD}", "Downhill"),
        (f"Which object is closer to the camera?\n\nA. The bus\nB. The tree\nC. The bicycle\nD. The sign\n\n"
         f"{_RWQA_LETTER}", "D"),
    ]
    return datasets.Dataset.from_dict({
        "image": [_img(500 + i, (80, 40 + 5 * i)) for i in range(len(rows))],
        "question": [q for q, _ in rows], "answer": [a for _, a in rows],
    }, features=REALWORLDQA_FEATURES)


# -- helpers -----------------------------------------------------------------------------------------------------------
def with_corrupt_image(ds: datasets.Dataset, row: int, column: str = "image") -> datasets.Dataset:
    """``ds`` with row ``row``'s image (each image of a list of images) replaced by bytes that are not an image."""
    feature = ds.features[column]
    is_list = not isinstance(feature, datasets.Image)
    undecoded = datasets.Image(decode=False)
    raw = ds.cast_column(column, datasets.List(undecoded) if is_list else undecoded)
    bad = {"bytes": b"this is not an image", "path": None}

    def swap(example, i):
        if i == row:
            example[column] = [bad for _ in example[column]] if is_list else bad
        return example

    return raw.map(swap, with_indices=True).cast_column(column, feature)


FIXTURES = {
    "scienceqa_img": scienceqa_img,
    "ai2d": ai2d,
    "mmbench_en": mmbench_en,
    "seedbench": seedbench,
    "realworldqa": realworldqa,
}
#: tasks whose local copy needs its own writer (see task_fixtures.write)
