"""tokenbench-mini: small VLMs trained from scratch on the synthetic task, shipped in the repo (``models/mini/``).

``train.py`` trains one (``python -m tokenbench.models.mini.train --out DIR``); ``tokenizer.py`` builds its word-level
tokenizer. The trained weights, config, tokenizer and processor live in one directory per architecture and load
through ``from_pretrained``; ``README.md`` beside them gives the settings, the training time and the figures.
"""
