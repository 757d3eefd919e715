"""Piece-score cache: round trip, lookups, and refusal of a cache built from other inputs."""
import os

import numpy as np
import pytest

from distill_ret.data import formats
from distill_ret.teachers import piece_scores
from distill_ret.teachers.base import Teacher


class WordOverlapTeacher(Teacher):
    """Score = number of query words in the candidate text, times `weight`; records how often it was called."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight
        self.calls = 0

    def score_batch(self, queries):
        self.calls += 1
        return [np.array([self.weight * len(set(q.text.split()) & set(doc.text.split())) for doc in q.candidates])
                for q in queries]

    def fingerprint(self):
        return {"kind": "word_overlap", "weight": repr(self.weight)}


REQUESTS = [
    piece_scores.PieceRequest("q1", "wing lift", "d1", "passage", ("the wing", "lift of a wing", "drag")),
    piece_scores.PieceRequest("q1", "wing lift", "d1", "sentence", ("wing", "lift", "nothing", "wing lift")),
    piece_scores.PieceRequest("q2", "heat flow", "d1", "passage", ("heat", "flow heat")),
    piece_scores.PieceRequest("q1", "wing lift", "d2", "passage", ("lift",)),
]


def test_compute_scores_every_piece_in_order():
    scores = piece_scores.compute(WordOverlapTeacher(), REQUESTS)
    assert len(scores) == 10
    np.testing.assert_array_equal(scores.get("q1", "d1", "passage"), [1, 2, 0])
    np.testing.assert_array_equal(scores.get("q1", "d1", "sentence"), [1, 1, 0, 2])
    np.testing.assert_array_equal(scores.get("q2", "d1", "passage"), [1, 2])
    assert scores.score("q1", "d2", "passage", 0) == 1.0
    assert set(scores.keys()) == {("q1", "d1", "passage"), ("q1", "d1", "sentence"), ("q2", "d1", "passage"),
                                  ("q1", "d2", "passage")}
    with pytest.raises(KeyError, match="no piece scores for query 'q2', document 'd2'"):
        scores.get("q2", "d2", "passage")


def test_round_trip_and_build_or_load_reuses_the_file(tmp_path):
    path = tmp_path / "pieces.npz"
    teacher = WordOverlapTeacher()
    built = piece_scores.build_or_load(path, teacher, REQUESTS)
    assert teacher.calls == 1 and path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pieces.npz"]  # no temporary file left behind
    loaded = piece_scores.build_or_load(path, teacher, REQUESTS)
    assert teacher.calls == 1  # served from disk, the teacher did not run again
    assert loaded.fingerprint == built.fingerprint
    for key in built.keys():
        np.testing.assert_array_equal(loaded.get(*key), built.get(*key))
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickled objects
        assert data["scores"].dtype == np.float32 and data["query_ids"].dtype.kind == "U"


@pytest.mark.parametrize("change, field", [
    (lambda: (WordOverlapTeacher(weight=2.0), REQUESTS), "teacher.weight"),
    (lambda: (WordOverlapTeacher(), [*REQUESTS[:3], piece_scores.PieceRequest("q1", "wing lift", "d2", "passage",
                                                                            ("lift!",))]), "pieces_sha256"),
    (lambda: (WordOverlapTeacher(), [*REQUESTS[:3], piece_scores.PieceRequest("q1", "wing drag", "d2", "passage",
                                                                            ("lift",))]), "pieces_sha256"),
])
def test_refuses_a_cache_built_from_other_inputs(tmp_path, change, field):
    path = tmp_path / "pieces.npz"
    piece_scores.build_or_load(path, WordOverlapTeacher(), REQUESTS)
    before = path.read_bytes()
    teacher, requests = change()
    with pytest.raises(piece_scores.StalePieceCacheError, match=f"pieces.npz: .*other inputs.*{field}"):
        piece_scores.build_or_load(path, teacher, requests)
    assert teacher.calls == 0 and path.read_bytes() == before


def test_fingerprint_is_order_independent_and_names_the_teacher():
    forward = piece_scores.fingerprint(WordOverlapTeacher(), REQUESTS)
    assert forward == piece_scores.fingerprint(WordOverlapTeacher(), REQUESTS[::-1])
    assert forward["teacher.kind"] == "word_overlap"


def test_rejects_duplicate_requests_bad_granularity_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="duplicate piece request"):
        piece_scores.compute(WordOverlapTeacher(), [REQUESTS[0], REQUESTS[0]])
    with pytest.raises(ValueError, match="granularity must be one of"):
        piece_scores.PieceRequest("q", "x", "d", "paragraph", ("x",))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(formats.FormatError, match="junk.npz: cannot read"):
        piece_scores.load(junk)
    gap = tmp_path / "gap.npz"
    np.savez(gap, fingerprint=np.array("{}"), query_ids=np.array(["q", "q"]), doc_ids=np.array(["d", "d"]),
             granularities=np.array([0, 0], np.int8), piece_indices=np.array([0, 2], np.int32),
             scores=np.zeros(2, np.float32))
    with pytest.raises(formats.FormatError, match="gap.npz: pieces of .* are not numbered 0..1"):
        piece_scores.load(gap)
    assert sorted(os.listdir(tmp_path)) == ["gap.npz", "junk.npz"]


def test_document_requests_follow_the_segmentation_rows(tmp_path):
    from distill_ret.data import segment
    from tests.teacher_helpers import write_tokenizer

    tokenizer = write_tokenizer(tmp_path / "tokenizer")
    text = "Wing lift rises. Drag falls. Heat flows in the slab. Shock wave."
    passages = [(0, 28), (29, len(text))]
    segmented = segment.segment_document(tokenizer, text, passages, max_length=64)
    passage_request, sentence_request = piece_scores.document_requests("q1", "wing lift", "d1", text, segmented)
    assert passage_request.pieces == ("Wing lift rises. Drag falls.", "Heat flows in the slab. Shock wave.")
    assert sentence_request.pieces == ("Wing lift rises.", "Drag falls.", "Heat flows in the slab.", "Shock wave.")
    assert len(sentence_request.pieces) == len(segmented.sentence_spans)
    scores = piece_scores.compute(WordOverlapTeacher(), [passage_request, sentence_request])
    np.testing.assert_array_equal(scores.get("q1", "d1", "sentence"), [1, 0, 0, 0])  # "lift" (case-sensitive)
    np.testing.assert_array_equal(scores.get("q1", "d1", "passage"), [1, 0])
