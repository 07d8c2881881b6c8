"""Fixtures of the yes/no and exact-match tasks (``pope``, ``mme``, ``gqa``) in their hub schemas.

- ``pope``: ``lmms-lab-encoder/POPE`` default config, split ``test``: 9 rows, three per category.
- ``mme``: ``lmms-lab-encoder/MME`` split ``test``: 8 rows, two questions (one yes, one no) on each of 4 images in 3
  perception subtasks and 1 cognition subtask.
- ``gqa``: a ``DatasetDict`` with ``instructions`` (``lmms-lab-encoder/GQA`` config
  ``testdev_balanced_instructions``, split ``testdev``: 6 questions) and ``images`` (config
  ``testdev_balanced_images``: 4 images, one of them asked about by no question, stored in another order).
  :func:`write_gqa_data` writes it in each local layout the ``gqa`` task accepts.
"""

from __future__ import annotations

import os

import datasets

from tokenbench.testing import fixture_image, write_task_data

_S = datasets.Value("string")

POPE_FEATURES = datasets.Features({
    "id": _S, "question_id": _S, "question": _S, "answer": _S, "image_source": _S, "image": datasets.Image(),
    "category": _S,
})
MME_FEATURES = datasets.Features({
    "question_id": _S, "image": datasets.Image(), "question": _S, "answer": _S, "category": _S,
})
_OBJECT = {"objectId": _S, "value": _S}
GQA_INSTRUCTION_FEATURES = datasets.Features({
    "id": _S, "imageId": _S, "question": _S, "answer": _S, "fullAnswer": _S, "isBalanced": datasets.Value("bool"),
    "groups": {"global": _S, "local": _S}, "entailed": _S, "equivalent": _S,
    "types": {"structural": _S, "semantic": _S, "detailed": _S},
    "annotations": {k: datasets.List(_OBJECT) for k in ("question", "answer", "fullAnswer")},
    "semantic": datasets.List({"operation": _S, "argument": _S,
                               "dependencies": datasets.List(datasets.Value("int32"))}),
    "semanticStr": _S,
})
GQA_IMAGE_FEATURES = datasets.Features({"id": _S, "image": datasets.Image()})


def pope() -> datasets.Dataset:
    objects = ["dining table", "car", "snowboard", "person", "bottle", "chair", "dog", "cup", "umbrella"]
    answers = ["yes", "no", "no", "yes", "no", "yes", "no", "yes", "no"]
    categories = ["adversarial"] * 3 + ["popular"] * 3 + ["random"] * 3
    sources = ["COCO_val2014_000000310196", "COCO_val2014_000000210789", "COCO_val2014_000000429109"]
    rows = {k: [] for k in POPE_FEATURES}
    for i in range(9):
        rows["id"].append(str(i))
        rows["question_id"].append(str(i + 1))
        rows["question"].append(f"Is there a {objects[i]} in the image?" + (" " if i == 4 else ""))
        rows["answer"].append(answers[i])
        rows["image_source"].append(sources[i % 3])
        rows["image"].append(fixture_image(i % 3, (64 + 8 * (i % 3), 48)))  # one image per source, as POPE
        rows["category"].append(categories[i])
    return datasets.Dataset.from_dict(rows, features=POPE_FEATURES)


MME_ROWS = [  # (question_id, category, question stem, answer)
    ("existence/000000006040.jpg", "existence", "Is there a train in this image?", "Yes"),
    ("existence/000000006040.jpg", "existence", "Is there a bed in this image?", "No"),
    ("count/000000450303.jpg", "count", "Are there two people in this image?", "Yes"),
    ("count/000000450303.jpg", "count", "Are there five people in this image?", "No"),
    ("OCR/0001.jpg", "OCR", "Is the word in the logo \"high time coffee shop\"?", "Yes"),
    ("OCR/0001.jpg", "OCR", "Is the word in the logo \"high tite cofeee shop\"?", "No"),
    ("code_reasoning/0020.png", "code_reasoning", "Is a c=5 output of this code?", "No"),
    ("code_reasoning/0020.png", "code_reasoning", "Is a c=7 output of this code?", "Yes"),
]


def mme() -> datasets.Dataset:
    rows = {k: [] for k in MME_FEATURES}
    for i, (qid, category, question, answer) in enumerate(MME_ROWS):
        rows["question_id"].append(qid)
        rows["image"].append(fixture_image(100 + i // 2, (56 + 4 * (i // 2), 40)))
        rows["question"].append(f"{question} Please answer yes or no.")
        rows["answer"].append(answer)
        rows["category"].append(category)
    return datasets.Dataset.from_dict(rows, features=MME_FEATURES)


GQA_QUESTIONS = [  # (id, imageId, question, answer, structural, semantic, detailed)
    ("20968379", "n288870", "Is the surfer that looks wet wearing a wetsuit?", "yes", "verify", "attr", "verifyAttrC"),
    ("20968380", "n288870", "What is the man wearing?", "t-shirt", "query", "rel", "relS"),
    ("201640614", "n161313", "Who is wearing the dress?", "woman", "query", "rel", "relS"),
    ("202225914", "n235859", "Is the cup to the left or to the right of the plate?", "left", "choose", "rel",
     "relChooser"),
    ("20968381", "n288870", "Which color is the board?", "white", "query", "attr", "colorS"),
    ("202225915", "n235859", "Are there both cups and plates in the picture?", "no", "logical", "obj", "existAndC"),
]
GQA_IMAGES = ("n235859", "n999999", "n288870", "n161313")  # stored order; n999999 is asked about by no question


def gqa_instructions() -> datasets.Dataset:
    rows = {k: [] for k in GQA_INSTRUCTION_FEATURES}
    for qid, image_id, question, answer, structural, semantic, detailed in GQA_QUESTIONS:
        rows["id"].append(qid)
        rows["imageId"].append(image_id)
        rows["question"].append(question)
        rows["answer"].append(answer)
        rows["fullAnswer"].append(f"The answer is {answer}.")
        rows["isBalanced"].append(True)
        rows["groups"].append({"global": None, "local": f"10q-{qid}"})
        rows["entailed"].append("")
        rows["equivalent"].append(qid)
        rows["types"].append({"structural": structural, "semantic": semantic, "detailed": detailed})
        rows["annotations"].append({"question": [{"objectId": "2", "value": "1201"}], "answer": [], "fullAnswer": []})
        rows["semantic"].append([{"operation": "select", "argument": "man (1201)", "dependencies": []},
                                 {"operation": "query", "argument": "name", "dependencies": [0]}])
        rows["semanticStr"].append("select: man (1201)->query: name [0]")
    return datasets.Dataset.from_dict(rows, features=GQA_INSTRUCTION_FEATURES)


def gqa_images() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"id": list(GQA_IMAGES), "image": [fixture_image(200 + i, (60 + 6 * i, 44)) for i in range(len(GQA_IMAGES))]},
        features=GQA_IMAGE_FEATURES)


def gqa() -> datasets.DatasetDict:
    return datasets.DatasetDict({"instructions": gqa_instructions(), "images": gqa_images()})


FIXTURES = {"pope": pope, "mme": mme, "gqa": gqa}

_HUB_README = """---
configs:
- config_name: train_balanced_images
  data_files:
  - split: train
    path: train_balanced_images/train-*
- config_name: testdev_balanced_images
  data_files:
  - split: testdev
    path: testdev_balanced_images/testdev-*
- config_name: testdev_balanced_instructions
  data_files:
  - split: testdev
    path: testdev_balanced_instructions/testdev-*
---
# GQA (test fixture)
"""


def write_gqa_data(dd: datasets.DatasetDict, directory: str,
                   forms=("save_to_disk", "parquet", "jsonl", "hub")) -> dict[str, str]:
    """Write the ``gqa`` fixture (``{"instructions", "images"}``) under ``directory`` in each local layout the task
    accepts; returns form -> the path to pass as ``--data``.

    ``save_to_disk``: ``DatasetDict.save_to_disk`` (``DIR/instructions``, ``DIR/images`` directories);
    ``parquet``: ``DIR/instructions.parquet`` and ``DIR/images.parquet``; ``jsonl``: ``DIR/instructions.jsonl`` and
    ``DIR/images.jsonl`` whose image paths (``images/...``) are relative to ``DIR``; ``hub``: a partial copy of the hub
    repository (``testdev_balanced_*/testdev-00000-of-00001.parquet``, and a ``README.md`` listing a config whose files
    were not downloaded, as the real one lists many: the task reads the folders, not the README)."""
    out = {}
    if "save_to_disk" in forms:
        out["save_to_disk"] = os.path.join(directory, "saved")
        dd.save_to_disk(out["save_to_disk"])
    for form in ("parquet", "jsonl"):
        if form in forms:
            root = out[form] = os.path.join(directory, form)
            for part in ("instructions", "images"):
                written = write_task_data(dd[part], root, forms=(form,))[form]
                os.replace(written, os.path.join(root, f"{part}.{form}"))
    if "hub" in forms:
        root = out["hub"] = os.path.join(directory, "hub")
        for part, config in (("instructions", "testdev_balanced_instructions"), ("images", "testdev_balanced_images")):
            os.makedirs(os.path.join(root, config), exist_ok=True)
            dd[part].to_parquet(os.path.join(root, config, "testdev-00000-of-00001.parquet"))
        with open(os.path.join(root, "README.md"), "w") as fh:
            fh.write(_HUB_README)
    return out
WRITERS = {"gqa": write_gqa_data}  # tasks whose local copy has its own layout
