"""distill_ret.errors: the one integer check every config field shares, and fingerprint differences in words."""
import pytest

from distill_ret.errors import ConfigError, describe_differences, integer_field


@pytest.mark.parametrize("value", [True, 1.0, "3", None, 1])
def test_integer_field_refuses_anything_but_an_integer_at_or_above_the_minimum(value):
    with pytest.raises(ConfigError) as error:
        integer_field(value, "config.data.seed", 2, "a hint")
    assert str(error.value) == f"config.data.seed={value!r}: must be an integer >= 2 (a hint)"
    assert integer_field(2, "config.data.seed", 2) == 2
    with pytest.raises(ConfigError, match=r"^config.x=-1: must be an integer >= 0$"):
        integer_field(-1, "config.x", 0)


def test_describe_differences_names_every_differing_field_with_both_values():
    stored, expected = {"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4}
    assert describe_differences(stored, expected, "the file") == (
        "b: the file has 2, inputs give 5; c: the file has 3, inputs give None; d: the file has None, inputs give 4")
