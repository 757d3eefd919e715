"""distill_ret: distillation-enhanced retrieval (DGR and FGD) in JAX/Flax."""

__version__ = "0.1.0"
