"""Scoring rules shared by the benchmark tasks, one module per family, each following lmms-eval's definitions:
``yesno`` (POPE, MME), ``vqa`` (VQA accuracy: TextVQA, OK-VQA, VizWiz, VQAv2), ``exact`` (GQA), ``choice`` (option
letters: ScienceQA, AI2D, MMBench, SEED-Bench, RealWorldQA) and ``caption`` (pycocoevalcap: COCO, NoCaps)."""
