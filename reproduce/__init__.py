"""The paper's reproduction as one script (``script/reproduce_paper.sh``): the inputs of the smoke
mode (``smoke``), the checks before any work (``checks``), the timing probe (``probe``), the plan
with its estimates (``plan``) and the per-stage wall time / peak memory (``costs``)."""
