"""Supervised fine-tuning (`apprentice train`): prompt templates, tokenisation with the prompt masked, token-budget
batching, a response-only chunked loss and our own training loop (full or LoRA, single or multi-process)."""
