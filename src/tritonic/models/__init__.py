"""Reference models built from ``tritonic.nn`` (GPT-2 and Llama style). Not written yet."""
