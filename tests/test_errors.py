"""distill_ret.errors: the integer and number checks every config field shares, and fingerprint differences in words."""
import pytest

import ml_collections

from distill_ret.errors import (ConfigError, describe_differences, integer_field, number_field, section_integer,
                                section_number)


@pytest.mark.parametrize("value", [True, 1.0, "3", None, 1])
def test_integer_field_refuses_anything_but_an_integer_at_or_above_the_minimum(value):
    with pytest.raises(ConfigError) as error:
        integer_field(value, "config.data.seed", 2, "a hint")
    assert str(error.value) == f"config.data.seed={value!r}: must be an integer >= 2 (a hint)"
    assert integer_field(2, "config.data.seed", 2) == 2
    with pytest.raises(ConfigError, match=r"^config.x=-1: must be an integer >= 0$"):
        integer_field(-1, "config.x", 0)


def test_section_integer_reads_the_field_and_names_its_path():
    section = ml_collections.ConfigDict({"depth": 0, "k": 3})
    assert section_integer(section, "config.retrieve", "k", 1) == 3
    with pytest.raises(ConfigError, match=r"^config.retrieve.depth=0: must be an integer >= 1 \(a hint\)$"):
        section_integer(section, "config.retrieve", "depth", 1, "a hint")
    with pytest.raises(ConfigError, match=r"^config.retrieve.missing=None: must be an integer >= 1$"):
        section_integer(section, "config.retrieve", "missing", 1)


@pytest.mark.parametrize("value", [True, "1.0", None, float("nan"), float("inf"), -float("inf")])
def test_number_field_refuses_anything_but_a_finite_real(value):
    with pytest.raises(ConfigError) as error:
        number_field(value, "config.x")
    assert str(error.value) == f"config.x={value!r}: must be a finite number"


def test_number_field_bounds_inclusive_or_exclusive_and_returns_a_float():
    assert number_field(3, "config.x") == 3.0 and isinstance(number_field(3, "config.x"), float)
    assert number_field(-2.5, "config.x") == -2.5
    assert number_field(0, "config.x", 0) == 0.0
    with pytest.raises(ConfigError, match=r"^config.x=-0.1: must be a finite number >= 0 \(0 = off\)$"):
        number_field(-0.1, "config.x", 0, hint="0 = off")
    with pytest.raises(ConfigError, match=r"^config.x=0: must be a finite number > 0$"):
        number_field(0, "config.x", 0, exclusive=True)
    assert number_field(1e-9, "config.x", 0, exclusive=True) == 1e-9
    section = ml_collections.ConfigDict({"tau": 0.0})
    with pytest.raises(ConfigError, match=r"^config.distill.tau=0.0: must be a finite number > 0$"):
        section_number(section, "config.distill", "tau", 0, exclusive=True)
    assert section_number(section, "config.distill", "tau", 0) == 0.0


def test_describe_differences_names_every_differing_field_with_both_values():
    stored, expected = {"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4}
    assert describe_differences(stored, expected, "the file") == (
        "b: the file has 2, inputs give 5; c: the file has 3, inputs give None; d: the file has None, inputs give 4")
