"""Mode `retrieve` routed by the config: an FGD config (`task == "fgd"`, configs/fgd.py) retrieves densely with its
student (distill_ret.fgd.retrieve); any other config is DGR's generative retrieval (distill_ret.dgr.retrieve)."""
from __future__ import annotations

from typing import Any

from distill_ret.dgr import retrieve as dgr_retrieve
from distill_ret.fgd import retrieve as fgd_retrieve


def run_from_config(config: Any, workdir: str) -> dict[str, Any]:
    """The retrieve mode that owns `config`; returns its {"run": path, "metrics": {...} or None}."""
    if config.get("task") == "fgd":
        return fgd_retrieve.run_from_config(config, workdir)
    return dgr_retrieve.run_from_config(config, workdir)
