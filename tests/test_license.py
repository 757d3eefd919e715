"""The repository carries the Apache License 2.0 and pyproject.toml names it (PEP 639)."""
import hashlib
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
COPYRIGHT = "   Copyright 2026 The distill_ret Authors\n"
# SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the text jax, flax and t5x ship.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_license_is_the_apache_2_0_text_with_our_copyright_line():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.count(COPYRIGHT) == 1
    template = text.replace(COPYRIGHT, "   Copyright [yyyy] [name of copyright owner]\n")
    assert hashlib.sha256(template.encode("utf-8")).hexdigest() == APACHE_2_0_SHA256


def test_pyproject_names_the_license():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    assert "setuptools>=77" in pyproject["build-system"]["requires"]  # the first setuptools that reads both fields
