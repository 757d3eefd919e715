"""The experiment scripts: they parse; the shared `stage` (launch/experiments/stages.sh) runs, skips and dry-runs a
stage with one line each; their stage lists (DRY=1 prints each stage instead of running it): every shared stage once,
the seeded stages once per seed in SEEDS, none when SEEDS is set but empty."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ["baselines/data", "baselines/bm25", "baselines/minilm", "baselines/teacher", "stage1", "mine",
          "stage1/retrieve"]
SCRIPTS = sorted(REPO_ROOT.glob("launch/**/*.sh"))


def _bash(script: str, **env) -> subprocess.CompletedProcess:
    """`script` in bash from the repository root, with this Python's bin directory first on PATH."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "PATH": path, **env}, timeout=120)


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
    return re.findall(r"^\[\w+\] (\S+): (?:would run|skipped)", result.stdout, flags=re.MULTILINE)


def _command(stdout, stage):
    """The words of the command a dry run prints for the stage whose name ends with `stage`."""
    return re.search(rf"{re.escape(stage)}: would run:\n\s+(.*)", stdout).group(1).split()


@pytest.mark.parametrize("script", ["cranfield_fgd.sh", "pydocs_fgd.sh"])
def test_fgd_scripts_list_the_shared_stages_and_each_seeds_stages(script, tmp_path):
    assert _stages(script, tmp_path) == SHARED + _seeded(0) + _seeded(1) + _seeded(2)
    assert _stages(script, tmp_path, SEEDS="2") == SHARED + _seeded(2)
    assert _stages(script, tmp_path, SEEDS="") == SHARED
    ablations = "no_passage no_sentence with_doc fg_pooling all_pooling separate"
    expected = [f"seed1/ablation={name}{part}" for name in ablations.split() for part in ("", "/retrieve")]
    at = expected.index("seed1/ablation=all_pooling")
    expected[at:at] = ["stage1_mean_pooling", "stage1_mean_pooling/retrieve"]  # its own warm-up
    assert _stages(script, tmp_path, SEEDS="1", ABLATIONS=ablations) == SHARED + _seeded(1) + expected
    refused = _run(script, tmp_path, ABLATIONS="no_passage bogus")
    assert refused.returncode == 1 and "unknown ablation 'bogus'" in refused.stderr and refused.stdout == ""


@pytest.mark.parametrize("script", ["cranfield_fgd.sh", "pydocs_fgd.sh"])
def test_systems_choose_and_order_each_seeds_stage_2_runs(script, tmp_path):
    assert _stages(script, tmp_path, SEEDS="1", SYSTEMS="nokd fgd dockd") == SHARED + [
        "seed1/nokd", "seed1/nokd/retrieve", "seed1/fgd", "seed1/fgd/retrieve", "seed1/fgd_mv/retrieve",
        "seed1/dockd", "seed1/dockd/retrieve"]
    assert _stages(script, tmp_path, SEEDS="0 2", SYSTEMS="dockd") == SHARED + [
        "seed0/dockd", "seed0/dockd/retrieve", "seed2/dockd", "seed2/dockd/retrieve"]
    refused = _run(script, tmp_path, SYSTEMS="fgd nokd_typo")
    assert refused.returncode == 1 and "unknown system 'nokd_typo'" in refused.stderr and refused.stdout == ""


@pytest.mark.parametrize("script", ["cranfield_fgd.sh", "pydocs_fgd.sh"])
def test_a_systems_mv_name_adds_its_students_multi_vector_retrieval_once(script, tmp_path):
    nokd = ["seed0/nokd", "seed0/nokd/retrieve"]
    assert _stages(script, tmp_path, SEEDS="0", SYSTEMS="nokd_mv") == SHARED + nokd + ["seed0/nokd_mv/retrieve"]
    assert _stages(script, tmp_path, SEEDS="0", SYSTEMS="nokd dockd nokd_mv fgd_mv fgd") == SHARED + nokd + [
        "seed0/dockd", "seed0/dockd/retrieve", "seed0/nokd_mv/retrieve", "seed0/fgd", "seed0/fgd/retrieve",
        "seed0/fgd_mv/retrieve"]
    commands = _run(script, tmp_path, SEEDS="0", SYSTEMS="nokd_mv").stdout
    mv = _command(commands, "nokd_mv/retrieve")
    assert f"--config.model.init_from={tmp_path / 'root'}/seed0/nokd" in mv and "--config.retrieve.gamma=0.4" in mv
    refused = _run(script, tmp_path, SYSTEMS="nokd_mv_mv")
    assert refused.returncode == 1 and "unknown system 'nokd_mv_mv'" in refused.stderr and refused.stdout == ""



def test_the_zero_shot_baseline_reads_the_documents_as_the_students_do(tmp_path):
    def commands(**environment):
        result = _run("pydocs_fgd.sh", tmp_path, SEEDS="", **environment)
        assert result.returncode == 0, result.stderr
        return {name: command for name, command in
                re.findall(r"^\[\w+\] (\S+): would run:\s+(.*)$", result.stdout, flags=re.MULTILINE)}

    extra = "--config.data.max_length=512 --config.train.num_steps=3 --config.data.visible_positives_only=True"
    minilm = commands(EXTRA_ARGS=extra)["baselines/minilm"].split()
    assert minilm[-2:] == ["--config.data.max_length=512", "--config.data.visible_positives_only=True"]
    assert "--config.train.num_steps=3" not in minilm  # training overrides stay with the training stages
    assert "--config.train.num_steps=3" in commands(EXTRA_ARGS=extra)["mine"].split()
    assert not any(word.startswith("--config.data.") for word in commands()["baselines/minilm"].split())

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


def test_the_fgd_sweeps_pieces_settings_set_the_four_counts_and_their_own_teacher_cache(tmp_path):
    environment = {"TABLE_ROOT": str(tmp_path / "table"), "LAMBDAS": "", "TEACHERS": "", "STEPS": ""}
    assert _stages("fgd_sweeps.sh", tmp_path, SEEDS="0 1", PIECES="2,4,2,4 4,12,4,8", **environment) == [
        f"seed{s}/pieces={p}/{part}" for s in (0, 1) for p in ("2,4,2,4", "4,12,4,8")
        for part in ("fgd", "fgd/retrieve", "fgd_mv/retrieve")]
    commands = _run("fgd_sweeps.sh", tmp_path, PIECES="2,4,3,5", **environment).stdout
    train = _command(commands, "pieces=2,4,3,5/fgd")
    assert [word for word in train if word.startswith(("--config.data.num_", "--config.data.passage_",
                                                       "--config.data.sentence_", "--config.teacher.cache"))] == [
        f"--config.teacher.cache_path={tmp_path / 'root'}/teacher_pieces=2,4,3,5.npz", "--config.data.num_passages=2",
        "--config.data.num_sentences=4", "--config.data.passage_negatives=3", "--config.data.sentence_negatives=5"]
    for bad in ("2,4,2", "0,4,2,4", "2,4,2,x"):
        refused = _run("fgd_sweeps.sh", tmp_path, PIECES=f"2,4,2,4 {bad}", **environment)
        assert refused.returncode == 2 and f"got '{bad}'" in refused.stderr and refused.stdout == ""


def test_the_fgd_sweeps_temperatures_set_the_teachers_temperature_and_read_the_chosen_cache(tmp_path):
    environment = {"TABLE_ROOT": str(tmp_path / "table"), "LAMBDAS": "", "TEACHERS": "", "STEPS": ""}
    assert _stages("fgd_sweeps.sh", tmp_path, SEEDS="0 1", TEMPERATURES="0.1 .02", **environment) == [
        f"seed{s}/temperature={t}/{part}" for s in (0, 1) for t in ("0.1", ".02")
        for part in ("fgd", "fgd/retrieve", "fgd_mv/retrieve")]
    for cache, expected in (("", f"{tmp_path / 'table'}/teacher_piece_scores.npz"), ("/c/pieces.npz", "/c/pieces.npz")):
        commands = _run("fgd_sweeps.sh", tmp_path, TEMPERATURES="0.1", CACHE=cache, **environment).stdout
        train = _command(commands, "temperature=0.1/fgd")
        assert train[-2:] == [f"--config.teacher.cache_path={expected}", "--config.fgd.teacher_temperature=0.1"]
    for bad in ("0", "0.0", "-1", "1e-2", "x"):
        refused = _run("fgd_sweeps.sh", tmp_path, TEMPERATURES=f"0.1 {bad}", **environment)
        assert refused.returncode == 2 and f"got '{bad}'" in refused.stderr and refused.stdout == ""


def test_the_fgd_sweeps_dense_teacher_entries_run_document_kd_and_fgd_from_that_directory(tmp_path):
    environment = {"TABLE_ROOT": str(tmp_path / "table"), "LAMBDAS": "", "STEPS": ""}
    assert _stages("fgd_sweeps.sh", tmp_path, SEEDS="0 1", TEACHERS="big=/models/big", **environment) == [
        f"seed{s}/teacher=big/{part}" for s in (0, 1)
        for part in ("dockd", "dockd/retrieve", "fgd", "fgd/retrieve", "fgd_mv/retrieve")]
    commands = _run("fgd_sweeps.sh", tmp_path, TEACHERS="big=/models/big",
                    DENSE_TEACHER_ARGS="--config.teacher.max_length=128", **environment).stdout
    teacher = ["--config.teacher.kind=dense", "--config.teacher.path=/models/big", "--config.teacher.max_length=128"]
    dockd = _command(commands, "teacher=big/dockd")
    fgd = _command(commands, "teacher=big/fgd")
    assert [word for word in dockd if word.startswith("--config.teacher.")] == teacher
    assert "--config.fgd.document_distillation=True" in dockd
    assert [word for word in fgd if word.startswith("--config.teacher.")] == teacher + [
        f"--config.teacher.cache_path={tmp_path / 'root'}/teacher_big_piece_scores.npz"]
    assert not any(word.startswith("--config.fgd.") and "distillation" in word for word in fgd)
    for bad in ("=/models/big", "big", "a b=/x"):
        refused = _run("fgd_sweeps.sh", tmp_path, TEACHERS=f"bm25 {bad}", **environment)
        assert refused.returncode == 2 and "TEACHERS takes bm25, NAME=DIR" in refused.stderr
        assert refused.stdout == ""


def test_the_fgd_sweeps_cross_encoder_entries_score_with_that_run_at_the_logits_temperature(tmp_path):
    environment = {"TABLE_ROOT": str(tmp_path / "table"), "LAMBDAS": "", "STEPS": ""}
    entry = "ce=cross_encoder:/runs/ce"
    assert _stages("fgd_sweeps.sh", tmp_path, TEACHERS=entry, **environment) == [
        f"seed0/teacher=ce/{part}" for part in ("dockd", "dockd/retrieve", "fgd", "fgd/retrieve", "fgd_mv/retrieve")]
    commands = _run("fgd_sweeps.sh", tmp_path, TEACHERS=entry, **environment).stdout
    teacher = ["--config.teacher.kind=cross_encoder", "--config.teacher.path=/runs/ce",
               "--config.fgd.teacher_temperature=1.0", "--config.teacher.score_distilled_only=True"]
    dockd = _command(commands, "teacher=ce/dockd")
    fgd = _command(commands, "teacher=ce/fgd")
    chosen = lambda words: [w for w in words if w.startswith(("--config.teacher.", "--config.fgd.teacher_temp"))]
    # BASE_ARGS' teacher temperature (0.05, for cosines) comes first; the entry's 1.0 is the last, so it wins
    assert chosen(dockd) == ["--config.fgd.teacher_temperature=0.05", *teacher]
    assert "--config.fgd.document_distillation=True" in dockd
    assert chosen(fgd) == ["--config.fgd.teacher_temperature=0.05", *teacher,
                           f"--config.teacher.cache_path={tmp_path / 'root'}/teacher_ce_piece_scores.npz"]
    commands = _run("fgd_sweeps.sh", tmp_path, TEACHERS=entry, CROSS_ENCODER_ARGS="--config.teacher.max_length=64",
                    **environment).stdout
    assert chosen(_command(commands, "teacher=ce/fgd"))[1:4] == [*teacher[:2], "--config.teacher.max_length=64"]


def test_the_pydocs_table_runs_its_rows_from_one_warm_up_with_the_settings_of_the_readme(tmp_path):
    def rows(seed, name, parts):
        return [f"seed{seed}/{name}/{part}" for part in parts]

    fgd = ("fgd", "fgd/retrieve", "fgd_mv/retrieve")
    assert _stages("pydocs_fgd_table.sh", tmp_path, SEEDS="0 1") == (
        SHARED + ["seed0/nokd", "seed0/nokd/retrieve", "seed1/nokd", "seed1/nokd/retrieve"]
        + [stage for seed in (0, 1) for name in ("temperature=0.01", "pieces=8,8,8,8")
           for stage in rows(seed, name, fgd)]
        + ["cross_encoder"]
        + [stage for seed in (0, 1) for stage in rows(seed, "teacher=ce2k", ("dockd", "dockd/retrieve", *fgd))])
    root = tmp_path / "root"
    commands = _run("pydocs_fgd_table.sh", tmp_path, SEEDS="0").stdout
    flags = ["--config.model.normalize=True", "--config.fgd.temperature=0.05", "--config.fgd.teacher_temperature=0.05",
             "--config.fgd.distill_visible_only=True"]
    for stage in ("] stage1", "seed0/nokd"):  # the warm-up, the mining and no KD: the four flags, the preset's pieces
        words = _command(commands, stage)
        assert words[-len(flags):] == flags and not any(word.startswith("--config.data.num_") for word in words)
    assert f"--config.model.init_from={root}/table/stage1" in _command(commands, "seed0/nokd")
    cache = f"--config.teacher.cache_path={root}/rows/teacher_pieces=8,8,8,8.npz"  # MiniLM's scores of 8, 8, 8, 8
    for stage in ("temperature=0.01/fgd", "pieces=8,8,8,8/fgd", "teacher=ce2k/dockd", "teacher=ce2k/fgd"):
        words = _command(commands, stage)
        assert f"--config.model.init_from={root}/table/stage1" in words
        assert f"--config.data.negatives_file={root}/table/negatives/negatives.jsonl" in words
        assert words.index("--config.data.num_sentences=8") > words.index(flags[-1])
        assert (cache in words) == stage.startswith(("temperature", "pieces"))
    assert _command(commands, "temperature=0.01/fgd")[-1] == "--config.fgd.teacher_temperature=0.01"
    assert f"--config.teacher.path={root}/cross_encoder" in _command(commands, "teacher=ce2k/fgd")
    assert "configs/cross_encoder.py:pydocs" in re.search(r"cross_encoder: would run: (.*)", commands).group(1)
    reused = _run("pydocs_fgd_table.sh", tmp_path, SEEDS="0", CROSS_ENCODER="/runs/ce").stdout
    assert "--config.teacher.path=/runs/ce" in _command(reused, "teacher=ce2k/dockd")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_every_launch_script_parses(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_stage_runs_a_missing_output_and_skips_an_existing_one(tmp_path):
    output = tmp_path / "out.txt"
    run = f'set -e; STAGE_TAG=t; source launch/experiments/stages.sh; stage one "{output}" touch "{output}"; ' \
          f'stage two "{output}" false'
    result = _bash(run)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[t\] one: ran in \d+ s", lines[0])
    assert lines[1] == f"[t] two: skipped ({output} exists)"
    assert output.exists()


def test_stage_dry_run_prints_the_command_and_runs_nothing(tmp_path):
    output = tmp_path / "out.txt"
    result = _bash(f'set -e; STAGE_TAG=t; source launch/experiments/stages.sh; stage one "{output}" touch "{output}"',
                   DRY="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"[t] one: would run: touch {output}\n"
    assert not output.exists()


def test_a_failing_stage_stops_the_script(tmp_path):
    output = tmp_path / "out.txt"
    result = _bash(f'set -e; source launch/experiments/stages.sh; stage one "{output}" false; echo after')
    assert result.returncode != 0
    assert result.stdout == ""


def test_stage_dry_run_of_a_function_prints_the_commands_it_runs(tmp_path):
    output = tmp_path / "out.txt"
    script = (f'set -e; STAGE_TAG=t; source launch/experiments/stages.sh; '
              f'make() {{ run echo made "$1" && run touch "$1"; }}; stage one "{output}" make "{output}"')
    result = _bash(script, DRY="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"[t] one: would run:\n  echo made {output}\n  touch {output}\n"
    assert not output.exists()
    result = _bash(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"made {output}" and output.exists()
