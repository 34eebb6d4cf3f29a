"""Language-model backends behind one small protocol (see llm.py)."""
