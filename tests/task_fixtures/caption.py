"""Fixtures of the captioning tasks in their hub schemas: ``coco_cap`` (lmms-lab-encoder/COCO-Caption2017, split val)
and ``nocaps`` (lmms-lab-encoder/NoCaps, split validation). Images are generated; captions are written for the test."""

from __future__ import annotations

import datasets

from tokenbench.testing import fixture_image

# (COCO image id, width, height, five reference captions)
_COCO = [
    (397133, 64, 48,
     ["A man is in a kitchen making pizzas.", "Man in apron standing on front of oven with pans and bakeware",
      "A baker is working in the kitchen rolling dough.", "A person standing by a stove in a kitchen.",
      "A table with pies being made and a person standing near a wall with pots and pans hanging on the wall."]),
    (37777, 48, 64,
     ["The dining table near the kitchen has a bowl of fruit on it.",
      "A small kitchen has various appliances and a table.", "The kitchen is clean and ready for us to see.",
      "A kitchen and dining area decorated in white.", "A kitchen that has a bowl of fruit on the table."]),
    (252219, 56, 56,
     ["a person with a shopping cart on a city street ", "City dwellers walk by as a homeless man begs for cash.",
      "People walking past a homeless man begging on a city street",
      "a homeless man holding a cup and standing next to a shopping cart on a street",
      "People are walking on the street by a homeless person."]),
    (87038, 72, 40,
     ["A person on a skateboard and bike at a skate park.",
      "A man on a skateboard performs a trick at the skate park",
      "A skateboard jumps into the air while a person watches.", "Skateboarder performing a trick at a skatepark.",
      "A skateboarder in midair at a skate park."]),
    (174482, 40, 72,
     ["a blue bike parked on a side walk ", "A bicycle is chained to a fixture on a city street",
      "A blue bicycle sits on a sidewalk near a street.", "A bicycle is locked up to a post",
      "a bike sits parked next to a street "]),
    (403385, 64, 64,
     ["A bathroom that has a broken wall in the shower.",
      "A bathroom with an enclosed shower next to a sink and a toilet.",
      "A bathroom with a toilet, sink and shower stall.", "A bathroom with a broken tile wall in the shower area.",
      "Tiled bathroom with shower stall, toilet, and sink."]),
]

# (NoCaps image id, Open Images id, width, height, ten reference captions)
_NOCAPS = [
    (0, "0013ea2087020901", 48, 64,
     ["A baby is standing in front of a house.", "A little girl in a white jacket and sandals.",
      "A young child stands in front of a house.", "A child is wearing a white shirt and standing on a side walk. ",
      "A little boy is standing in his diaper with a white shirt on.",
      "A child wearing a diaper and shoes stands on the sidewalk.",
      "A child is wearing a light-colored shirt during the daytime.",
      "A little kid standing on the pavement in a shirt.", "Black and white photo of a little girl smiling.",
      "a cute baby is standing alone with white shirt"]),
    (1, "002410b4a9a8e14c", 64, 48,
     ["A red and white lighthouse next to a house.", "A lighthouse stands on a rocky shore.",
      "A tall lighthouse with a red top by the sea.", "The white lighthouse is beside a small building.",
      "A lighthouse and a cottage under a blue sky.", "An old lighthouse near the ocean.",
      "A striped lighthouse on the coast.", "A lighthouse on a hill near the water.",
      "A lighthouse tower next to a white house.", "a light house that is red and white"]),
    (2, "0034e3a93fd7c0c9", 56, 56,
     ["A jellyfish floating in dark blue water.", "A pink jellyfish swims in the ocean.",
      "A jellyfish with long tentacles in the sea.", "A translucent jellyfish drifting underwater.",
      "A close up of a jellyfish in an aquarium.", "The jellyfish glows in the dark water.",
      "A large jellyfish swimming near the surface.", "A jellyfish is shown against a black background.",
      "A sea creature with tentacles floats in water.", "an orange jellyfish in the water"]),
    (3, "0048a6fe0f8d5e51", 72, 40,
     ["A violin lying on a wooden table.", "A brown violin and a bow on a table.",
      "A musical instrument rests on the table.", "A violin next to its bow.", "An old violin on a piece of cloth.",
      "A close up of a violin.", "A wooden violin sitting on a desk.", "A violin with four strings on a table.",
      "A violin and bow placed on a surface.", "a fiddle on a table"]),
    (4, "005a63b5e1bc3b1c", 40, 72,
     ["Two camels walking in the desert.", "A pair of camels cross the sand dunes.",
      "Camels walking across a sandy desert.", "Two brown camels in the sand.",
      "Camels travel through the desert under the sun.", "Two camels with humps in the desert.",
      "A couple of camels on a sand dune.", "Two camels walking one behind the other.",
      "Camels in a dry sandy landscape.", "two camels out in the desert"]),
]


def coco_cap() -> datasets.Dataset:
    """lmms-lab-encoder/COCO-Caption2017, split val (lmms-eval coco2017_cap_val): one row per image."""
    features = datasets.Features({
        "question_id": datasets.Value("string"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Sequence(datasets.Value("string")),
        "id": datasets.Value("int64"),
        "license": datasets.Value("int8"),
        "file_name": datasets.Value("string"),
        "coco_url": datasets.Value("string"),
        "height": datasets.Value("int32"),
        "width": datasets.Value("int32"),
        "date_captured": datasets.Value("string"),
    })
    rows = {k: [] for k in features}
    for i, (image_id, w, h, captions) in enumerate(_COCO):
        name = f"{image_id:012d}.jpg"
        rows["question_id"].append(name)
        rows["image"].append(fixture_image(100 + i, (w, h)))
        rows["question"].append("Please carefully observe the image and come up with a caption for the image.")
        rows["answer"].append(captions)
        rows["id"].append(image_id)
        rows["license"].append(i % 7 + 1)
        rows["file_name"].append(name)
        rows["coco_url"].append(f"http://images.cocodataset.org/val2017/{name}")
        rows["height"].append(h)
        rows["width"].append(w)
        rows["date_captured"].append(f"2013-11-{14 + i:02d} 17:02:52")
    return datasets.Dataset.from_dict(rows, features=features)


def nocaps() -> datasets.Dataset:
    """lmms-lab-encoder/NoCaps, split validation (lmms-eval nocaps_val): one row per image, ten captions."""
    features = datasets.Features({
        "image": datasets.Image(),
        "image_coco_url": datasets.Value("string"),
        "image_date_captured": datasets.Value("string"),
        "image_file_name": datasets.Value("string"),
        "image_height": datasets.Value("int32"),
        "image_width": datasets.Value("int32"),
        "image_id": datasets.Value("int32"),
        "image_license": datasets.Value("int8"),
        "image_open_images_id": datasets.Value("string"),
        "annotations_ids": datasets.Sequence(datasets.Value("int32")),
        "annotations_captions": datasets.Sequence(datasets.Value("string")),
    })
    rows = {k: [] for k in features}
    for image_id, open_id, w, h, captions in _NOCAPS:
        rows["image"].append(fixture_image(200 + image_id, (w, h)))
        rows["image_coco_url"].append(f"https://s3.amazonaws.com/nocaps/val/{open_id}.jpg")
        rows["image_date_captured"].append("2018-11-06 11:04:33")
        rows["image_file_name"].append(f"{open_id}.jpg")
        rows["image_height"].append(h)
        rows["image_width"].append(w)
        rows["image_id"].append(image_id)
        rows["image_license"].append(0)
        rows["image_open_images_id"].append(open_id)
        rows["annotations_ids"].append(list(range(10 * image_id, 10 * image_id + 10)))
        rows["annotations_captions"].append(captions)
    return datasets.Dataset.from_dict(rows, features=features)


FIXTURES = {"coco_cap": coco_cap, "nocaps": nocaps}
