"""BERT-Tickets (Chen et al., NeurIPS 2020): lottery-ticket subnetworks of a pre-trained BERT found
by iterative magnitude pruning (IMP) with rewinding to the pre-trained weights.

* ``tickets.pruning``: which weights are pruned (the encoder's Linear weights) and the pruning
  itself, through ``torch.nn.utils.prune`` (global L1 magnitude, masks as forward pre-hooks);
* ``tickets.storage``: mask files (safetensors) and the dense / sparse storage sizes;
* ``tickets.timing``: the latency protocol of the tables (``latency.measure``) applied to any
  given HF model, fp32 and dynamic int8;
* ``tickets.setup``: what a run is (options, files, model, recipe), checked before anything is written;
* ``tickets.imp``: the IMP loop (fine-tune, prune, rewind, repeat), resumable per round;
* ``tickets.report``: one row per round for the report, and the "matching" subnetwork.

``bert_tickets.py`` is the command line; ``script/bert_tickets.sh`` the stage script.
"""
