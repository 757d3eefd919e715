"""Pseudo-queries drawn from passage texts (data/pseudo_queries.py): the eligible sentences by hand, the draw's
determinism, its bounds, and that a passage's title never becomes a query."""
import pytest

from distill_ret.data import formats, pseudo_queries

TEXT = ("the wing was tested at mach two . a shock forms near the leading edge of the plate . "
        "heat transfer rises . the boundary layer separates behind the shock at high angles of attack .")


def test_eligible_sentences_by_word_counts_and_start():
    # Sentences start at words 0, 8, 19 and 23 and have 8, 11, 4 and 13 words (the full stop is a word here).
    assert pseudo_queries.eligible_sentences(TEXT, 1, 100, 0) == [
        "the wing was tested at mach two .", "a shock forms near the leading edge of the plate .",
        "heat transfer rises .", "the boundary layer separates behind the shock at high angles of attack ."]
    assert pseudo_queries.eligible_sentences(TEXT, 5, 12, 0) == [
        "the wing was tested at mach two .", "a shock forms near the leading edge of the plate ."]
    assert pseudo_queries.eligible_sentences(TEXT, 1, 100, 9) == [
        "heat transfer rises .", "the boundary layer separates behind the shock at high angles of attack ."]
    assert pseudo_queries.eligible_sentences(TEXT, 1, 100, 19)[0] == "heat transfer rises ."
    assert pseudo_queries.eligible_sentences(TEXT, 1, 100, 24) == []


def corpus(count: int) -> dict[str, formats.Document]:
    return {f"d{i}": formats.Document(f"d{i}", f"title words of passage {i}",
                                      TEXT if i % 3 else "too short .") for i in range(count)}


def test_draw_is_seeded_one_query_per_passage_from_its_text_and_skips_passages_without_a_sentence():
    docs = corpus(9)
    drawn = pseudo_queries.draw(docs, 4, seed=3, min_words=5, max_words=14, skip_words=0)
    assert drawn == pseudo_queries.draw(docs, 4, seed=3, min_words=5, max_words=14, skip_words=0)
    assert len(drawn) == 4 and len({query.doc_id for query in drawn}) == 4
    for query in drawn:
        assert query.query_id == "pseudo-" + query.doc_id and int(query.doc_id[1:]) % 3  # never "too short ."
        assert query.text in pseudo_queries.eligible_sentences(docs[query.doc_id].text, 5, 14, 0)
        assert "title" not in query.text
    assert pseudo_queries.draw(docs, 4, seed=4, min_words=5, max_words=14, skip_words=0) != drawn
    everything = pseudo_queries.draw(docs, 100, seed=3, min_words=5, max_words=14, skip_words=0)
    assert sorted(query.doc_id for query in everything) == [f"d{i}" for i in range(9) if i % 3]  # 6 qualify
    assert everything[:4] == drawn  # a larger count extends the same draw
    assert pseudo_queries.draw(docs, 0, seed=3, min_words=5, max_words=14, skip_words=0) == []


def test_draw_rejects_impossible_bounds():
    with pytest.raises(ValueError, match="max_words=2"):
        pseudo_queries.draw(corpus(3), 1, seed=0, min_words=3, max_words=2, skip_words=0)
