"""The elastic BERT supernet (``modeling_super``), its config, checkpoints, and the conversion
to and from plain Hugging Face BERT (``hf_converter``)."""
