"""Published full-model scores, shipped as data (``tokenbench/data/published.json``), so a run checks itself: the
notes under a ``compare`` table set ``full``'s score beside the published one where the model and task are known
(:func:`tokenbench.results.tables.format_table`), and ``tokenbench list published`` prints them all.

An entry is one published number: the registered model it belongs to, the tokenbench task and the key of the row's
``metrics`` it corresponds to, its value on tokenbench's scale (a share in [0, 1] where ``percent``, else as the task
reports it) and as the source prints it, the prompt it was made with (:data:`PROMPTS`), the scorer, the source, and a
caveat saying how the published protocol differs from tokenbench's task. A row is recognised by its registered model
name or by its checkpoint (``model_source``, or the part of ``model`` after ``family:``): the hub id, a local copy laid
out as ``<org>/<name>`` or named ``<name>``, or the hub cache's ``models--<org>--<name>``.

Loading needs neither torch nor the registries; a damaged file is a :class:`tokenbench.errors.ConfigError` naming the
entry and the field.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field

from tokenbench.errors import ConfigError

#: the prompt styles a number can be made with: LLaVA's conversation templates (conv_vicuna_v1, mistral_instruct), or
#: the checkpoint's chat template (lmms-eval's default; what a row without ``prompt_style`` ran with)
PROMPTS = ("llava", "chat")
ENTRY_FIELDS = {"model": str, "task": str, "metric": str, "value": (int, float), "published": str, "percent": bool,
                "prompt": str, "scorer": str, "source": str}
OPTIONAL_FIELDS = {"caveat": str, "task_options": dict, "image_pixels": str}
SOURCE_FIELDS = ("name", "url", "commit", "where")


@dataclass(frozen=True)
class Source:
    """Where numbers were read: a name to print, the page's URL, the commit it was read at, and where on the page."""

    key: str
    name: str
    url: str
    commit: str
    where: str


@dataclass(frozen=True)
class Published:
    """One published full-model score (see the module docstring)."""

    model: str
    task: str
    metric: str
    value: float
    published: str
    percent: bool
    prompt: str
    scorer: str
    source: Source
    caveat: str = ""
    task_options: dict = field(default_factory=dict)
    image_pixels: str = ""  # the pixel range (tokenbench.contract.model.PIXEL_RANGES) a dynamic-resolution score used

    @property
    def decimals(self) -> int:
        """The decimals the source prints (at least one), for printing a run's figure beside it."""
        return max(1, len(self.published.partition(".")[2]))

    def shown(self, value: float) -> float:
        """``value`` (tokenbench's scale) on the published scale."""
        return 100 * value if self.percent else value


@dataclass(frozen=True)
class Scores:
    """The shipped scores: each model's checkpoints (``hub``, and the checkpoint the numbers were made with) and the
    entries, in the file's order."""

    models: dict[str, dict]
    entries: tuple[Published, ...]


def default_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "published.json")


@functools.lru_cache(maxsize=None)
def shipped() -> Scores:
    """The scores shipped with tokenbench (loaded and checked once)."""
    return load(default_path())


def load(path: str) -> Scores:
    """The scores in ``path``, checked: every field present with its type, models and sources known, prompts in
    :data:`PROMPTS`, a percent value in [0, 1], ``published`` equal to ``value`` on the published scale, no entry
    twice."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"published scores {path}: cannot be read ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), t) for k, t in
                                             (("sources", dict), ("models", dict), ("entries", list))):
        raise ConfigError(f"published scores {path}: expected an object with 'sources' and 'models' (objects) and "
                          "'entries' (a list)")
    sources = {key: _source(path, key, s) for key, s in data["sources"].items()}
    models = {name: _model(path, name, m) for name, m in data["models"].items()}
    entries, seen = [], set()
    for i, raw in enumerate(data["entries"]):
        entry = _entry(path, i, raw, sources, models)
        key = (entry.model, entry.task, entry.metric)
        if key in seen:
            raise ConfigError(f"published scores {path}: entry {i} ({' '.join(key)}) appears twice")
        seen.add(key)
        entries.append(entry)
    return Scores(models, tuple(entries))


def _source(path: str, key: str, raw) -> Source:
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) and raw[k] for k in SOURCE_FIELDS):
        raise ConfigError(f"published scores {path}: source {key!r} needs the strings {', '.join(SOURCE_FIELDS)}")
    return Source(key, *(raw[k] for k in SOURCE_FIELDS))


def _model(path: str, name: str, raw) -> dict:
    hub = raw.get("hub") if isinstance(raw, dict) else None
    if not (isinstance(hub, list) and hub and all(isinstance(h, str) and h.count("/") == 1 for h in hub)):
        raise ConfigError(f"published scores {path}: model {name!r} needs 'hub', a list of hub ids ('org/name')")
    return raw


def _entry(path: str, i: int, raw, sources: dict[str, Source], models: dict[str, dict]) -> Published:
    if not isinstance(raw, dict):
        raise ConfigError(f"published scores {path}: entry {i} is not an object")
    where = f"published scores {path}: entry {i} ({raw.get('model')} {raw.get('task')} {raw.get('metric')})"
    for name, kind in {**ENTRY_FIELDS, **OPTIONAL_FIELDS}.items():
        if name not in raw and name in OPTIONAL_FIELDS:
            continue
        if (not isinstance(raw.get(name), kind) or (kind is not bool and isinstance(raw[name], bool))
                or (kind is str and not raw[name].strip())):
            what = "missing" if name not in raw else f"{raw[name]!r} is not a {_kind_words(kind)}"
            raise ConfigError(f"{where}: field {name!r}: {what}")
    unknown = set(raw) - set(ENTRY_FIELDS) - set(OPTIONAL_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if raw["model"] not in models:
        raise ConfigError(f"{where}: model {raw['model']!r} is not among 'models' ({', '.join(models)})")
    if raw["source"] not in sources:
        raise ConfigError(f"{where}: source {raw['source']!r} is not among 'sources' ({', '.join(sources)})")
    if raw.get("image_pixels", "lmms-eval") not in ("lmms-eval", "checkpoint"):
        raise ConfigError(f"{where}: image_pixels {raw['image_pixels']!r} is not one of lmms-eval, checkpoint")
    if raw["prompt"] not in PROMPTS:
        raise ConfigError(f"{where}: prompt {raw['prompt']!r} is not one of {', '.join(PROMPTS)}")
    value = float(raw["value"])
    if raw["percent"] and not 0 <= value <= 1:
        raise ConfigError(f"{where}: value {value!r} is not a share in [0, 1] (tokenbench's scale for a percent "
                          "metric: 85.9 % is 0.859)")
    entry = Published(**{**raw, "value": value, "source": sources[raw["source"]]})
    try:
        printed = float(entry.published)
    except ValueError:
        raise ConfigError(f"{where}: published {entry.published!r} is not a number") from None
    if not math.isclose(printed, entry.shown(value), rel_tol=1e-9, abs_tol=1e-9):
        raise ConfigError(f"{where}: published {entry.published} is not value {value!r} on the published scale "
                          f"({entry.shown(value):g})")
    return entry


def _kind_words(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({str: "non-empty string", bool: "boolean", dict: "object", int: "number", float: "number"}[k]
                       for k in dict.fromkeys(kinds))


# -- matching a row ----------------------------------------------------------------------------------------------------
def model_of(row: dict, scores: Scores | None = None) -> str | None:
    """The registered model of the shipped scores that ``row`` ran: its ``model`` name, or its checkpoint (see the
    module docstring); None when neither is known."""
    scores = scores or shipped()
    name = str(row.get("model") or "")
    if name in scores.models:
        return name
    checkpoint = row.get("model_source") or (name.partition(":")[2] if ":" in name else "")
    if not checkpoint:
        return None
    for model, facts in scores.models.items():
        if any(_is_checkpoint(str(checkpoint), hub) for hub in facts["hub"]):
            return model
    return None


def _is_checkpoint(checkpoint: str, hub: str) -> bool:
    """Whether ``checkpoint`` (a hub id or a local directory) is the hub checkpoint ``hub`` ('org/name')."""
    path = checkpoint.replace("\\", "/").rstrip("/").casefold()
    hub = hub.casefold()
    org, name = hub.split("/")
    parts = path.split("/")
    return (path == hub or path.endswith("/" + hub) or parts[-1] == name
            or f"models--{org}--{name}" in parts)  # the hub cache: .../models--org--name/snapshots/<sha>


def published_all(row: dict, scores: Scores | None = None) -> list[Published]:
    """Every entry for ``row``'s model and task whose metric the row reports, in the file's order."""
    scores = scores or shipped()
    model = model_of(row, scores)
    if model is None:
        return []
    metrics = row.get("metrics") or {}
    return [e for e in scores.entries if e.model == model and e.task == row.get("task")
            and metrics.get(e.metric) is not None]


def published_for(row: dict, scores: Scores | None = None) -> Published | None:
    """The entry for ``row`` (model, task, and a metric it reports): the one for its primary metric when there is
    one, else the first; None when nothing is published for it."""
    found = published_all(row, scores)
    primary = [e for e in found if e.metric == row.get("metric")]
    return (primary or found or [None])[0]
