"""A job config's `data` section -> a BEIR-layout data set: read from `data.beir_dir`, or built by a builder."""
from __future__ import annotations

import ml_collections

from distill_ret.data import builders, formats
from distill_ret.errors import ConfigError


def load_beir(config: ml_collections.ConfigDict, workdir: str) -> tuple[formats.BeirDataset, str]:
    """(data set, where it was read from). `data.beir_dir` wins; otherwise `data.name` names a builder whose
    BEIR export (built on first use, see `distill_ret.data.builders`) is read."""
    beir_dir = config.data.get("beir_dir", "")
    if beir_dir:
        return formats.read_beir(beir_dir), str(beir_dir)
    if config.data.name not in builders.BUILDERS:
        raise ConfigError(
            f"set config.data.beir_dir to a BEIR directory, or config.data.name to a builder "
            f"({', '.join(sorted(builders.BUILDERS))}); got name={config.data.name!r} and no beir_dir"
        )
    return builders.load_beir_from_config(config, workdir), str(builders.beir_dir(config, workdir))
