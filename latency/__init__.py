"""Latency tables and the latency predictor (stages 3-4). See docs/latency.md.

* ``protocol``    -- the protocol's settings and their defaults, written once (``Protocol``);
                     ``baf-latency-3`` (paired runs, the default) and ``baf-latency-2``;
* ``environment`` -- the machine and library versions recorded with every measurement, threads and
                     CPU pinning, the machine's one latency-timing slot;
* ``measure``     -- timing: clocks, runs, statistics, ``time_pairs`` (baf-latency-3) and ``measure``
                     (baf-latency-2's rounds);
* ``backends``    -- what is timed: the extracted plain HF ``BertModel`` (cheap builds under
                     baf-latency-3) in fp32, PyTorch dynamic int8 or ONNX Runtime int8;
* ``dataset``     -- the latency-table stage behind ``inference_time_evaluation_quant.py`` and
                     ``inference_time_evaluation_quant_onnx.py`` (flags, resume, shards; typed entry
                     ``measure_tables(StageConfig)``), with ``selection`` (which archs);
* ``paired``      -- one run of baf-latency-3; ``session`` + ``robust`` + ``drift`` -- one run of
                     baf-latency-2 (anchor, reference checkpoints, re-measurement) and drift summaries;
* ``table``       -- reading/writing latency tables (our JSONL, the original ``<arch>\\t<ms>`` lines);
* ``units``       -- a table's unit, and archs measured in it (``measure_in_unit``);
* ``finalists``   -- budgets kept by measurement: a search's finalists measured in its table's unit;
* ``lines``       -- the FFN line of an arch (defined once);
* ``noise``       -- measurement-noise estimates (second differences, repeated archs);
* ``compare``     -- tables side by side (int8/fp32 speedup, ORT vs PyTorch);
* ``predictor``   -- the MLP latency predictor (model, data, training, checkpoint, lock, plot).
"""
