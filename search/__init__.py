"""Evolutionary search under a latency budget (stage 5), as a library the command lines call.

* ``search.config``    -- ``SearchConfig``: what one search is, typed (scheme, budget window, resolved
  space, predictor, supernet, strategy, sizes), built and cross-checked once (``build_search_config``);
* ``search.methods``   -- ``run_method(config, method, ...)``: Candidate / Random / Fast / Evolved / TopK;
* ``search.evolution`` -- the generation logic as plain functions over a latency callable and a
  fitness dict (runs without any model), the latency window;
* ``search.plan``      -- one search's settings from the environment (``script/search.sh``), checked
  before anything is written;
* ``search.chain``     -- ``SearchRun``: a search's steps in one process on typed values (the search
  methods and ``evaluation.evaluate.Evaluator``);
* ``search.cli``       -- searcher.py's flags (and a search's ``SEARCH_ARGS``) -> ``SearchConfig``;
* ``search.identity``, ``search.history`` -- what a search is on disk, and its per-generation log.

``searcher.py`` and ``run_search.py`` are the thin command lines over them.
"""
