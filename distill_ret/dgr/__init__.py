"""DGR: distillation-enhanced generative retrieval (identifier tries, constrained beam search, training tasks)."""
