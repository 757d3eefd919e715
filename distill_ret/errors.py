"""User-facing errors that the command line reports as one line (no traceback) with a non-zero exit.

Every error a user can cause (a bad config value, a malformed or missing input file, a checkpoint that does not
fit, a run that diverged) derives from `UserError`; `distill_ret.main` prints it as
`distill-ret MODE: error: <message>` and exits 1. Any other exception is a bug in distill_ret.
`integer_field` is the one check every integer config field goes through, so each refusal reads alike.
"""


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


def differing_fields(stored: dict, expected: dict) -> list[str]:
    """The keys, sorted, on which two fingerprints disagree (present in only one counts as differing)."""
    return sorted(key for key in set(stored) | set(expected) if stored.get(key) != expected.get(key))


def describe_differences(stored: dict, expected: dict, holder: str) -> str:
    """'key: <holder> has 'a', inputs give 'b'; ...' for every differing fingerprint field, for stale-file errors."""
    return "; ".join(f"{key}: {holder} has {stored.get(key)!r}, inputs give {expected.get(key)!r}"
                     for key in differing_fields(stored, expected))
