"""Fixtures of the VQA-accuracy tasks (textvqa, okvqa, vizwiz_vqa, vqav2): a few rows each in the hub schema of
lmms-lab-encoder/textvqa, OK-VQA, VizWiz-VQA and VQAv2 (column names, order and feature types as the datasets'
cards give them), with generated images and answers chosen to exercise the answer normalisation."""

from __future__ import annotations

import datasets

from tokenbench.testing import fixture_image

S = datasets.Value("string")
STRINGS = datasets.List(datasets.Value("string"))

TEXTVQA_FEATURES = datasets.Features({
    "image_id": S, "question_id": datasets.Value("int32"), "question": S, "question_tokens": STRINGS,
    "image": datasets.Image(), "image_width": datasets.Value("int32"), "image_height": datasets.Value("int32"),
    "flickr_original_url": S, "flickr_300k_url": S, "answers": STRINGS, "image_classes": STRINGS, "set_name": S,
    "ocr_tokens": STRINGS,
})
OKVQA_FEATURES = datasets.Features({
    "question_id": S, "image": datasets.Image(), "question": S, "answers": STRINGS, "question_type": S,
    "answer_type": S,
})
VIZWIZ_FEATURES = datasets.Features({
    "question_id": S, "image": datasets.Image(), "question": S, "answers": STRINGS, "category": S,
})
VQAV2_FEATURES = datasets.Features({
    "question_type": S, "multiple_choice_answer": S,
    "answers": datasets.List({"answer": S, "answer_confidence": S, "answer_id": datasets.Value("int64")}),
    "image_id": datasets.Value("int64"), "answer_type": S, "question_id": datasets.Value("int64"), "question": S,
    "image": datasets.Image(),
})

_SIZES = [(64, 48), (48, 64), (80, 40), (56, 56), (72, 54), (40, 60), (60, 45), (50, 50)]

_TEXTVQA = [  # question, answers, ocr tokens
    ("what is the brand of this camera?",
     ["dakota", "dakota", "clos du bois", "dakota digital", "dakota", "dakota", "dakota digital", "dakota", "dakota",
      "dakota"], ["dakota", "digital", "single-use", "camera"]),
    ("what does the small white text spell?",
     ["copenhagen", "copenhagen", "copenhagen", "copenhagen", "copenhagen", "thursday", "copenhagen", "copenhagen",
      "copenhagen", "copenhagen"], ["copenhagen", "thursday"]),
    ("What number is on the player's JERSEY?",
     ["22", "22", "22", "22", "twenty two", "22", "22", "22", "22", "22"], ["22", "ADIDAS"]),
    ("what kind of beer is this?",
     ["Ale", "sublimely self-righteous ale", "stone", "ale", "self righteous", "ale", "sublimely self-righteous",
      "stone ale", "ale", "self-righteous"], ["Stone", "SUBLIMELY", "SELF-RIGHTEOUS", "ALE"]),
    ("who is the author of the book?",
     ["the author", "J.K. Rowling", "jk rowling", "j.k. rowling", "rowling", "J. K. Rowling", "j.k. rowling",
      "unanswerable", "j.k rowling", "j.k. rowling"], []),
    ("what time is it?",
     ["10:10", "10:10", "ten past ten", "10:10", "10:10", "10.10", "10:10", "10:10", "10:10", "10:10"], ["10:10"]),
]


def textvqa() -> datasets.Dataset:
    rows = []
    for i, (question, answers, ocr) in enumerate(_TEXTVQA):
        w, h = _SIZES[i]
        rows.append({
            "image_id": f"{0x0054a0c3f1a7d5 + i:016x}", "question_id": 34602 + i, "question": question,
            "question_tokens": question.rstrip("?").split(), "image": fixture_image(100 + i, (w, h)),
            "image_width": w, "image_height": h, "flickr_original_url": f"https://farm.example/{i}_o.jpg",
            "flickr_300k_url": f"https://farm.example/{i}_z.jpg", "answers": answers,
            "image_classes": ["Poster", "Book"], "set_name": "val", "ocr_tokens": ocr,
        })
    return datasets.Dataset.from_list(rows, features=TEXTVQA_FEATURES)


_OKVQA = [
    ("What sport can you use this for?", ["race"] * 4 + ["racing"] * 4 + ["motocross"] * 2, "one", "other"),
    ("Name the type of plant this is?", ["vine"] * 4 + ["flower"] * 2 + ["bamboo"] * 4, "eight", "other"),
    ("What toy is this?", ["stuffed animal"] * 6 + ["teddy bear"] * 2 + ["teddy"] * 2, "five", "other"),
    ("How many people can ride this at once?", ["2"] * 4 + ["two"] * 2 + ["1"] * 4, "nine", "other"),
    ("Which US state is this city in?", ["New York"] * 6 + ["ny"] * 4, "three", "other"),
]


def okvqa() -> datasets.Dataset:
    rows = [{"question_id": str(2971475 + 10 * i), "image": fixture_image(200 + i, _SIZES[i]), "question": q,
             "answers": answers, "question_type": qtype, "answer_type": atype}
            for i, (q, answers, qtype, atype) in enumerate(_OKVQA)]
    return datasets.Dataset.from_list(rows, features=OKVQA_FEATURES)


_VIZWIZ = [
    ("what is this?", ["unanswerable"] * 7 + ["wall"] * 2 + ["ceiling"], "unanswerable"),
    ("Can you tell me what this is?", ["ranch dressing"] * 5 + ["salad dressing"] * 3 + ["unanswerable"] * 2,
     "other"),
    ("is it sunny outside?", ["yes"] * 8 + ["no"] * 2, "yes/no"),
    ("How many pills are in this bottle?", ["unanswerable"] * 3 + ["30"] * 3 + ["thirty"] * 2 + ["unsuitable"] * 2,
     "number"),
    ("What color is this shirt?", ["blue"] * 4 + ["navy blue"] * 3 + ["dark blue"] * 3, "other"),
]


def vizwiz_vqa() -> datasets.Dataset:
    rows = [{"question_id": f"VizWiz_val_{i:08d}.jpg", "image": fixture_image(300 + i, _SIZES[i]), "question": q,
             "answers": answers, "category": category} for i, (q, answers, category) in enumerate(_VIZWIZ)]
    return datasets.Dataset.from_list(rows, features=VIZWIZ_FEATURES)


_VQAV2 = [  # question, answers, question type, answer type
    ("Where is he looking?", ["down", "down", "at table", "skateboard", "down", "table", "down", "down", "down",
                              "down"], "none of the above", "other"),
    ("What are the people in the background doing?", ["watching"] * 3 + ["spectating"] * 2 + ["sitting"] * 5,
     "what are the", "other"),
    ("How many dogs are there?", ["2", "2", "two", "2", "2", "3", "2", "2", "2", "2"], "how many", "number"),
    ("Is this a man's bike?", ["yes"] * 9 + ["no"], "is this a", "yes/no"),
    ("What is the man holding?", ["frisbee", "Frisbee", "a frisbee", "frisbee", "disc", "frisbee.", "frisbee",
                                  "frisbee", "disk", "frisbee"], "what is the man", "other"),
    ("What time is on the clock?", ["10:10", "10:10", "ten ten", "10:10", "10:10", "10:10", "10:10", "10:10", "10:10",
                                    "10:10"], "what time", "other"),
]


def vqav2() -> datasets.Dataset:
    rows = []
    for i, (q, answers, qtype, atype) in enumerate(_VQAV2):
        rows.append({
            "question_type": qtype, "multiple_choice_answer": max(set(answers), key=answers.count),
            "answers": [{"answer": a, "answer_confidence": "yes" if j % 3 else "maybe", "answer_id": j + 1}
                        for j, a in enumerate(answers)],
            "image_id": 262148 + i, "answer_type": atype, "question_id": 262148000 + i, "question": q,
            "image": fixture_image(400 + i, _SIZES[i]),
        })
    return datasets.Dataset.from_list(rows, features=VQAV2_FEATURES)


FIXTURES = {"textvqa": textvqa, "okvqa": okvqa, "vizwiz_vqa": vizwiz_vqa, "vqav2": vqav2}
