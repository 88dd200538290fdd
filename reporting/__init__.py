"""The report of a reproduction (``report.py``): the paper's table per latency budget, with every
number a mean over seeds with its spread, claims computed from those numbers, a machine-readable
``summary.json``, and plots. ``inputs`` reads the artefacts, ``summary`` computes, ``claims`` words
it, ``views`` renders Markdown/CSV and ``plots`` draws."""
