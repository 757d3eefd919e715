"""Shared by the model tests of remat: how many activations the backward pass keeps from the forward pass."""
import contextlib
import io

import jax.ad_checkpoint


def saved_activations(fn, *args) -> int:
    """The number of residuals `jax.grad(fn)` saves that are not `fn`'s own arguments (JAX's public report of them,
    `print_saved_residuals`, one line each)."""
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    return sum("from the argument" not in line for line in report.getvalue().splitlines())
