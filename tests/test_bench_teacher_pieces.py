"""bench/teacher_pieces.py's per-pair records: ranks and shares over the pieces the loss uses, by hand."""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import teacher_pieces  # noqa: E402


def test_passage_record_ranks_the_judged_passage_among_visible_passages_only():
    scores = np.array([0.2, 0.9, 0.5, 0.7], np.float32)
    visible = np.array([True, False, True, True])
    # 0.9 is cut from the encoding: only 0.7 is above the judged 0.5 -> rank 2 of 3 visible.
    assert teacher_pieces._passage_record(scores, visible, 2, [0.1, 0.4]) == (2, 3, True)
    assert teacher_pieces._passage_record(scores, visible, 2, [0.1, 0.6])[2] is False


def test_sentence_record_top_share_and_best_against_negatives():
    scores = np.array([0.3, 0.8, 0.6, 0.9, 0.1], np.float32)
    visible = np.array([True, True, True, False, True])
    judged = np.array([False, False, True, True, True])
    # visible: 0.3, 0.8 (not judged), 0.6, 0.1 (judged); the top visible sentence (0.8) is not judged; 2 of 4 judged;
    # the best visible judged sentence is 0.6.
    assert teacher_pieces._sentence_record(scores, visible, judged, [0.5]) == (False, 0.5, True)
    assert teacher_pieces._sentence_record(scores, visible, judged, [0.7])[2] is False
    assert teacher_pieces._sentence_record(scores, visible, ~judged & visible, [])[0] is True
    assert teacher_pieces._sentence_record(scores, visible, np.array([False, False, False, True, False]), []) is None
