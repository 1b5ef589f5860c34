"""Mul-T5 and what trains it: tokenizer, questions, batching, the training loop, the copy warm-up."""
