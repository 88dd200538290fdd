"""Evolutionary search under a latency budget (stage 5).

``search.evolution`` holds the generation logic (Candidate / Random / Fast / Evolved) as plain
functions over a latency callable and a fitness dict, so it runs without any model;
``search.history`` keeps the per-generation search log that the report plots.
``searcher.py`` is the thin command line over both.
"""
