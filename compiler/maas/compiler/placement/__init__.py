"""Placement: where a deployment runs and what it needs (entry, llama.cpp fit, llama.cpp memory,
vLLM)."""
