"""User-facing errors that the command line reports as one line (no traceback) with a non-zero exit.

Every error a user can cause (a bad config value, a malformed or missing input file, a checkpoint that does not
fit, a run that diverged) derives from `UserError`; `distill_ret.main` prints it as
`distill-ret MODE: error: <message>` and exits 1. Any other exception is a bug in distill_ret.
`integer_field` / `section_integer` and `number_field` / `section_number` are the checks every integer and every
real-valued config field goes through, so each refusal reads alike.
"""
import math


class UserError(Exception):
    """Base of every error the user can cause and fix; its message names the file, line or config field."""


class ConfigError(UserError, ValueError):
    """A job config is missing a required field or asks for something impossible; the message names the field."""


def integer_field(value, field: str, minimum: int, hint: str = ""):
    """`value` when it is an integer (not a bool) >= minimum; else ConfigError '<field>=<value>: must be an integer
    >= <minimum> (<hint>)'. `field` is the dotted config path, e.g. 'config.data.seed'."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{field}={value!r}: must be an integer >= {minimum}" + (f" ({hint})" if hint else ""))
    return value


def section_integer(section, path: str, name: str, minimum: int, hint: str = ""):
    """`integer_field` of field `name` of a config section whose dotted path is `path` (e.g. 'config.retrieve');
    a missing field reads as None and is refused like any other non-integer."""
    return integer_field(section.get(name), f"{path}.{name}", minimum, hint)


def number_field(value, field: str, minimum: float | None = None, *, exclusive: bool = False,
                 hint: str = "") -> float:
    """float(value) when it is a finite real number (not a bool) and, unless minimum is None, >= minimum (> minimum
    when exclusive); else ConfigError '<field>=<value>: must be a finite number[ >= minimum][ (hint)]'."""
    finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not finite or (minimum is not None and (value <= minimum if exclusive else value < minimum)):
        bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum}"
        raise ConfigError(f"{field}={value!r}: must be a finite number{bound}" + (f" ({hint})" if hint else ""))
    return float(value)


def section_number(section, path: str, name: str, minimum: float | None = None, *, exclusive: bool = False,
                   hint: str = "") -> float:
    """`number_field` of field `name` of the config section at dotted `path` (a missing field reads as None)."""
    return number_field(section.get(name), f"{path}.{name}", minimum, exclusive=exclusive, hint=hint)


def differing_fields(stored: dict, expected: dict) -> list[str]:
    """The keys, sorted, on which two fingerprints disagree (present in only one counts as differing)."""
    return sorted(key for key in set(stored) | set(expected) if stored.get(key) != expected.get(key))


def describe_differences(stored: dict, expected: dict, holder: str) -> str:
    """'key: <holder> has 'a', inputs give 'b'; ...' for every differing fingerprint field, for stale-file errors."""
    return "; ".join(f"{key}: {holder} has {stored.get(key)!r}, inputs give {expected.get(key)!r}"
                     for key in differing_fields(stored, expected))
