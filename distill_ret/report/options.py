"""What mode `report` is asked to do: `config.report` -> `ReportOptions`, every field checked before anything is
read (a ConfigError naming the field)."""
from __future__ import annotations

import dataclasses
import re

import ml_collections

from distill_ret import evaluation
from distill_ret.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    output_dir: str = ""  # "" = <workdir>/report
    seed_pattern: str = r"seed\d+|s\d+"  # a path component matching this in full is a seed
    systems: str = ""  # "label=path,label=path": renames and orders systems
    measures: str = ""  # measure columns, comma-separated; "" = every measure found
    baseline: str = ""  # a system (label or path) every other one is compared with; "" = no comparison
    qrels_path: str = ""  # qrels of the per-query randomization test; "" = seeds only
    qrels_format: str = "beir"  # a key of evaluation.QRELS_READERS


def options_from_config(config: ml_collections.ConfigDict) -> ReportOptions:
    section = config.report
    options = ReportOptions(output_dir=section.output_dir, seed_pattern=section.seed_pattern,
                            systems=section.systems, measures=section.measures, baseline=section.baseline,
                            qrels_path=section.qrels_path, qrels_format=section.qrels_format)
    check_options(options)
    return options


def check_options(options: ReportOptions) -> None:
    """Every option's value, checked before anything is read (ConfigError naming the field)."""
    for field in ("output_dir", "seed_pattern", "systems", "measures", "baseline", "qrels_path", "qrels_format"):
        value = getattr(options, field)
        if not isinstance(value, str):
            raise ConfigError(f"config.report.{field}={value!r}: must be a string")
    seed_regex(options.seed_pattern)
    system_names(options.systems)
    if options.qrels_path and not options.baseline:
        raise ConfigError(f"config.report.qrels_path={options.qrels_path!r}: tests systems against "
                          "config.report.baseline, which is empty")
    if options.qrels_format not in evaluation.QRELS_READERS:
        raise ConfigError(f"config.report.qrels_format={options.qrels_format!r}: must be one of "
                          f"{sorted(evaluation.QRELS_READERS)}")


def seed_regex(pattern: str) -> re.Pattern:
    if not pattern:
        raise ConfigError("config.report.seed_pattern='': must be a regular expression (e.g. 'seed\\d+|s\\d+')")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"config.report.seed_pattern={pattern!r}: not a regular expression: {error}") from None


def system_names(spec: str) -> dict[str, str]:
    """`config.report.systems` ("label=path,label=path") as path -> label, in the order given."""
    names: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        label, equals, path = (text.strip() for text in item.partition("="))
        if not (equals and label and path):
            raise ConfigError(f"config.report.systems={spec!r}: {item!r} is not label=path")
        if path in names or label in names.values():
            raise ConfigError(f"config.report.systems={spec!r}: {item!r} repeats a label or a path")
        names[path] = label
    return names
