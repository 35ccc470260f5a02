"""Integrations with other libraries: ``hf.py`` makes ``transformers`` models use tritonic's kernels
(``tritonic.optimize``)."""
