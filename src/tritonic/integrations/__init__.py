"""Integrations with other libraries (``hf.py``: ``optimize()`` for transformers). Not written yet."""
