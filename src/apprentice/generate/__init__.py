"""Instruction-data generation: seed tasks, prompts, parsing, filters, the ROUGE-L near-duplicate index, the loop."""
