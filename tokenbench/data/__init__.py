"""Benchmark data: hub and local dataset loading (``hub``), the VQA-accuracy task base (``vqa``), and the scorers shared by task family (``scoring``)."""
