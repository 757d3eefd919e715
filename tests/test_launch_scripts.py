"""The experiment scripts' stage lists (DRY=1 prints each stage instead of running it): every shared stage once, the
seeded stages once per seed in SEEDS, none when SEEDS is set but empty."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ["baselines/data", "baselines/bm25", "baselines/minilm", "baselines/teacher", "stage1", "mine",
          "stage1/retrieve"]


def _seeded(seed):
    return [f"seed{seed}/{name}" for name in ("nokd", "nokd/retrieve", "dockd", "dockd/retrieve", "fgd",
                                               "fgd/retrieve", "fgd_mv/retrieve")]


def _run(script, tmp_path, **environment):
    env = {**os.environ, "DRY": "1", "ROOT": str(tmp_path / "root"),
           "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **environment}
    result = subprocess.run(["bash", str(REPO_ROOT / "launch" / "experiments" / script)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert not (tmp_path / "root").exists()  # a dry run writes nothing
    return result


def _stages(script, tmp_path, **environment):
    result = _run(script, tmp_path, **environment)
    assert result.returncode == 0, result.stderr
    return re.findall(r"^stage (\S+): (?:would run|skipped)", result.stdout, flags=re.MULTILINE)


@pytest.mark.parametrize("script", ["cranfield_fgd.sh", "pydocs_fgd.sh"])
def test_fgd_scripts_list_the_shared_stages_and_each_seeds_stages(script, tmp_path):
    assert _stages(script, tmp_path) == SHARED + _seeded(0) + _seeded(1) + _seeded(2)
    assert _stages(script, tmp_path, SEEDS="2") == SHARED + _seeded(2)
    assert _stages(script, tmp_path, SEEDS="") == SHARED
    ablations = "no_passage no_sentence with_doc fg_pooling all_pooling separate"
    expected = [f"seed1/ablation={name}{part}" for name in ablations.split() for part in ("", "/retrieve")]
    expected.insert(expected.index("seed1/ablation=all_pooling"), "stage1_mean_pooling")  # its own warm-up
    assert _stages(script, tmp_path, SEEDS="1", ABLATIONS=ablations) == SHARED + _seeded(1) + expected
    refused = _run(script, tmp_path, ABLATIONS="no_passage bogus")
    assert refused.returncode == 1 and "unknown ablation 'bogus'" in refused.stderr and "stage" not in refused.stdout


def test_the_fgd_sweeps_list_each_setting_once_per_seed(tmp_path):
    def seeded(seed, lambdas=("2", "4"), steps=("180",), every_pair=True):
        stages = []
        for weight in lambdas:
            stages += [f"seed{seed}/lambda={weight}/fgd", f"seed{seed}/lambda={weight}/fgd/retrieve",
                       f"seed{seed}/lambda={weight}/fgd_mv/retrieve"]
        stages += [f"seed{seed}/teacher=bm25/dockd", f"seed{seed}/teacher=bm25/dockd/retrieve",
                   f"seed{seed}/teacher=bm25/fgd", f"seed{seed}/teacher=bm25/fgd/retrieve",
                   f"seed{seed}/teacher=bm25/fgd_mv/retrieve"]
        if every_pair:  # pydocs' table distils the visible pairs only: fgd_all distils every pair
            stages += [f"seed{seed}/teacher=bm25/fgd_all", f"seed{seed}/teacher=bm25/fgd_all/retrieve"]
        for count in steps:
            stages += [f"seed{seed}/steps={count}/nokd", f"seed{seed}/steps={count}/nokd/retrieve",
                       f"seed{seed}/steps={count}/fgd", f"seed{seed}/steps={count}/fgd/retrieve",
                       f"seed{seed}/steps={count}/fgd_mv/retrieve"]
        return stages

    environment = {"TABLE_ROOT": str(tmp_path / "table")}
    assert _stages("fgd_sweeps.sh", tmp_path, **environment) == seeded(0)  # lambda=1 is the table's FGD
    assert _stages("fgd_sweeps.sh", tmp_path, SEEDS="1 2", LAMBDAS="4", TEACHERS="", STEPS="",
                   **environment) == [f"seed{s}/lambda=4/{part}" for s in (1, 2)
                                      for part in ("fgd", "fgd/retrieve", "fgd_mv/retrieve")]
    assert _stages("fgd_sweeps.sh", tmp_path, DATASET="cranfield", LAMBDAS="", STEPS="",
                   **environment) == seeded(0, lambdas=(), steps=(), every_pair=False)
