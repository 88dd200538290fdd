"""Candidate evaluation (stage 6): extract a sub-model from the supernet, fine-tune it on a GLUE
task, evaluate it in fp32 and with its scheme (int8), and record the result.

* ``evaluation.config``   -- ``EvaluationConfig``: one evaluation run, typed; the arch gate (``check_archs``);
* ``evaluation.recipe``   -- ``Recipe`` (the fine-tune of one (task, arch, seed)) and ``RecipeSettings``
  (what a user set; the defaults), every number checked;
* ``evaluation.evaluate`` -- the typed call: ``Evaluator(config).evaluate(archs, seeds)`` /
  ``evaluate_archs``, resumable (``ResultsStore.is_done``);
* ``evaluation.candidate``-- the per-arch protocol (extract, fine-tune, score with each scheme);
* ``evaluation.results``  -- the ``subbert.results`` JSONL record and its text twin (the blocks' format:
  ``evaluation.result_blocks``), the one score accessor (``score``, ``scheme_metrics``);
* ``evaluation.data``     -- tokenise a task once and batch it with dynamic padding;
* ``evaluation.finetune`` -- fine-tune one HF sub-model and evaluate it;
* ``evaluation.learning`` -- did a fine-tune learn: the verdict on each scored split, read from records;
* ``evaluation.runner``   -- the command line behind ``superbert_run_en_classifier_{fp,ptq}.py``.
"""
