"""Candidate evaluation (stage 6): extract a sub-model from the supernet, fine-tune it on a GLUE
task, evaluate it in fp32 and (ptq) in int8, and record the result.

* ``evaluation.results``: the ``subbert.results`` block writer/parser and its JSONL twin;
* ``evaluation.data``: tokenise a task once and batch it with dynamic padding;
* ``evaluation.finetune``: fine-tune one HF sub-model and evaluate it (fp32, int8);
* ``evaluation.runner``: the shared command line behind ``superbert_run_en_classifier_{fp,ptq}.py``.
"""
