#!/usr/bin/env bash
# The first real run: `full` (the unmodified model) on the three 7B checkpoints over a few hundred samples of POPE,
# GQA and TextVQA, each printed beside the score its authors published (compare's "published:" line: the published
# figure, full's here and the difference, with the prompt style, scorer and caveats of the published one). It needs
# the weights (the hub cache or --model family:/path) and a GPU; it reads the data from local copies only.
#
#   bash scripts/paper-check.sh pope=/data/POPE gqa=/data/GQA textvqa=/data/TextVQA
#
# Each TASK=PATH is what `tokenbench compare --data` takes (a save_to_disk directory, a copy of the hub repository,
# parquet or jsonl); a task left out is skipped. Environment (defaults in brackets):
#   MODELS   [llava-1.5-7b llava-next-7b qwen2.5-vl-7b]  registered names or family:/path/to/checkpoint
#   LIMIT    [300]       samples per task (the first LIMIT of the split, as compare's --limit)
#   DEVICE   [cuda]      DTYPE [float16]      OUT [measurements/paper-check]: one rows file per model and task
#   PYTHON   [python3]   the interpreter that has tokenbench installed
# LLaVA checkpoints run with --prompt-style llava (LLaVA's conv_vicuna_v1 / mistral_instruct, as LLaVA published its
# numbers), LLaVA-1.5's TextVQA with its reference OCR tokens (-T ocr=true, as LLaVA's question file has them) and
# POPE's rows round-robin over its three categories (-T interleave=true: LIMIT samples cover each, as the published
# mean of the categories' F1);
# Qwen2.5-VL runs its chat template with lmms-eval's pixel range (the defaults). Exit status: 0 when every run
# finished, 1 when one failed (the others still run), 2 on bad arguments.
set -uo pipefail
python="${PYTHON:-python3}"
models="${MODELS:-llava-1.5-7b llava-next-7b qwen2.5-vl-7b}"
limit="${LIMIT:-300}"
out="${OUT:-measurements/paper-check}"
declare -A data=()
for arg in "$@"; do
  task="${arg%%=*}" path="${arg#*=}"
  case "$task" in
    pope|gqa|textvqa) ;;
    *) echo "paper-check: $arg: give TASK=PATH with TASK one of pope, gqa, textvqa" >&2; exit 2 ;;
  esac
  if [ "$task" = "$arg" ] || [ ! -e "$path" ]; then
    echo "paper-check: $arg: no such path (a local copy of the task's data, as --data takes it)" >&2; exit 2
  fi
  data[$task]="$path"
done
if [ "${#data[@]}" -eq 0 ]; then
  echo "usage: scripts/paper-check.sh pope=PATH [gqa=PATH] [textvqa=PATH]  (see the comment at the top)" >&2; exit 2
fi
mkdir -p "$out" || exit 2
status=0
for model in $models; do
  style=()
  case "$model" in *llava*) style=(--prompt-style llava) ;; esac
  for task in pope gqa textvqa; do
    [ -n "${data[$task]:-}" ] || continue
    extra=()
    case "$model:$task" in *llava-1.5*:textvqa|llava:*:textvqa) extra=(-T ocr=true) ;; *:pope) extra=(-T interleave=true) ;; esac
    name="$(echo "$model" | tr '/:' '__')"
    echo "== $model on $task (first $limit samples)"
    "$python" -m tokenbench compare full -M "$model" -t "$task" --data "$task=${data[$task]}" --limit "$limit" \
      --keep-ratio 1 --device "${DEVICE:-cuda}" --dtype "${DTYPE:-float16}" --repeats 1 --warmup 1 --no-store -q \
      "${style[@]}" "${extra[@]}" --json "$out/$name-$task.json" || status=1
  done
done
exit $status
