"""Every preset of every config file in configs/ (found on disk, presets from each module's PRESETS) loads through
ml_collections' config_flags, as `--config=FILE:preset` on the command line does, from a working directory outside
the repository; every leaf field is assigned on a line that carries a trailing comment (in the config itself or in
configs/common.py, wherever the assignment runs); an unknown preset is one clear error listing the presets.

The comment check is dynamic: while a config is built, every `ConfigDict` attribute assignment records the file
and line that made it; every leaf of the finished config must have been assigned that way (a field created through
a dict or `update` fails too) on a statement with a non-empty trailing `# comment`.
"""
import ast
import functools
import importlib.machinery
import importlib.util
import io
import pathlib
import sys
import tokenize

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
SHARED_MODULES = ("common.py", "__init__.py")
CONFIG_FILES = sorted(path for path in CONFIGS.rglob("*.py") if path.name not in SHARED_MODULES)


def _load_module(path: pathlib.Path):
    """The config module loaded as config_flags loads it: by path, with a SourceFileLoader, outside any package."""
    name = "test_" + "_".join(path.relative_to(CONFIGS).with_suffix("").parts)
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return module


def _presets(path: pathlib.Path) -> list[str]:
    """The names in the module's PRESETS (a mapping or a tuple of names); [] when it has none."""
    return list(getattr(_load_module(path), "PRESETS", ()))


# config_flags itself loads config files with SourceFileLoader.load_module (deprecated since Python 3.10).
pytestmark = pytest.mark.filterwarnings("ignore:the load_module\\(\\) method is deprecated:DeprecationWarning")
CASES = [(path, preset) for path in CONFIG_FILES for preset in _presets(path)]


def _case_id(path: pathlib.Path, preset: str) -> str:
    return f"{path.relative_to(CONFIGS)}:{preset}"


def _parse_config_flag(argument: str) -> ml_collections.ConfigDict:
    """`--config=<argument>` parsed by config_flags' own flag, on a fresh flag registry (as distill_ret.main does)."""
    registry = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "job config", flag_values=registry)
    registry(["distill-ret", f"--config={argument}"])
    return registry.config


def _leaves(config: ml_collections.ConfigDict, prefix: str = ""):
    """(dotted name, the ConfigDict holding it, its key) for every field that is not a section."""
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", config, key


@functools.cache
def _commented_statement_lines(filename: str) -> frozenset[int]:
    """Lines of `filename` that belong to a simple statement with a non-empty trailing `#` comment."""
    source = pathlib.Path(filename).read_text()
    trailing_comment_lines = set()
    code_lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            if token.start[0] in code_lines and token.string.lstrip("#").strip():
                trailing_comment_lines.add(token.start[0])
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            span = range(node.lineno, node.end_lineno + 1)
            if trailing_comment_lines.intersection(span):
                lines.update(span)
    return frozenset(lines)


@pytest.fixture
def recorded_assignments(monkeypatch):
    """{(id of a ConfigDict, key): (file, line)} of every non-section field assigned as an attribute."""
    records = {}
    original_setattr = ml_collections.ConfigDict.__setattr__

    def recording_setattr(self, attribute, value):
        original_setattr(self, attribute, value)
        if not isinstance(value, ml_collections.ConfigDict):
            caller = sys._getframe(1)
            records[(id(self), attribute)] = (caller.f_code.co_filename, caller.f_lineno)

    monkeypatch.setattr(ml_collections.ConfigDict, "__setattr__", recording_setattr)
    return records


def uncommented_fields(config: ml_collections.ConfigDict, records: dict) -> list[str]:
    """The leaves of `config` not assigned as an attribute on a line with a trailing comment, with where they were
    assigned."""
    missing = []
    for name, holder, key in _leaves(config):
        where = records.get((id(holder), key))
        if where is None:
            missing.append(f"{name} (not assigned as an attribute, so its comment cannot be checked)")
        elif where[1] not in _commented_statement_lines(where[0]):
            missing.append(f"{name} ({where[0]}:{where[1]} has no trailing comment)")
    return missing


def test_config_files_are_found_and_each_names_its_presets():
    assert {"bm25.py", "build_data.py", "cross_encoder.py", "t5_seq2seq.py"} <= {path.name for path in CONFIG_FILES}
    assert [str(path.relative_to(CONFIGS)) for path in CONFIG_FILES if not _presets(path)] == []


@pytest.mark.parametrize(("path", "preset"), CASES, ids=[_case_id(*case) for case in CASES])
def test_preset_loads_through_config_flags_and_every_field_has_a_comment(path, preset, recorded_assignments,
                                                                           monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # configs must not depend on the working directory
    config = _parse_config_flag(f"{path}:{preset}")
    assert isinstance(config, ml_collections.ConfigDict)
    leaves = list(_leaves(config))
    assert leaves, f"{_case_id(path, preset)} has no fields"
    assert uncommented_fields(config, recorded_assignments) == []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[str(path.relative_to(CONFIGS)) for path in CONFIG_FILES])
def test_default_preset_is_the_first_and_an_unknown_one_lists_the_presets(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    presets = _presets(path)
    assert presets, "no PRESETS"
    assert _parse_config_flag(str(path)).to_dict() == _parse_config_flag(f"{path}:{presets[0]}").to_dict()
    with pytest.raises(flags.IllegalFlagValueError) as raised:
        _parse_config_flag(f"{path}:no-such-preset")
    expected = f"unknown preset 'no-such-preset' for {path.relative_to(REPO_ROOT)}; presets: {sorted(presets)}"
    assert expected in str(raised.value)


def test_a_field_without_a_comment_is_reported(recorded_assignments, tmp_path):
    config_file = tmp_path / "job.py"
    config_file.write_text(
        "import ml_collections\n"
        "PRESETS = ('only',)\n"
        "def get_config(arg=None):\n"
        "    config = ml_collections.ConfigDict()\n"
        "    config.section = ml_collections.ConfigDict()\n"
        "    config.section.commented = 1  # a comment\n"
        "    config.section.bare = 2\n"
        "    config.section.empty = 3  #\n"
        "    config.section.spread = (\n"
        "        1,  # a comment inside a value spread over lines\n"
        "    )\n"
        "    # a comment on a line of its own\n"
        "    config.section.above = 4\n"
        "    config.section.update({'hidden': 5})\n"
        "    return config\n"
    )
    config = _parse_config_flag(f"{config_file}:only")
    assert uncommented_fields(config, recorded_assignments) == [  # in ConfigDict's (sorted) field order
        f"section.above ({config_file}:13 has no trailing comment)",
        f"section.bare ({config_file}:7 has no trailing comment)",
        f"section.empty ({config_file}:8 has no trailing comment)",
        "section.hidden (not assigned as an attribute, so its comment cannot be checked)",
    ]
