"""Identifier views: semantic docids are a complete, distinct, prefix-free (after tokenisation with EOS) and
seed-deterministic labelling; k-means++/Lloyd on separable points finds the clusters; the views, their many-to-many
map and the weights; the identifiers directory round-trips and refuses one built from other inputs."""
import importlib.util
import pathlib

import numpy as np
import pytest

from distill_ret.data import formats
from distill_ret.dgr import identifiers, semantic_ids
from distill_ret.dgr import trie as trie_lib
from distill_ret.errors import ConfigError

_SPEC = importlib.util.spec_from_file_location(
    "configs_retrieve", pathlib.Path(__file__).resolve().parents[1] / "configs" / "retrieve.py")
retrieve_config = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(retrieve_config)

WORDS = "wing flow shock boundary layer heat transfer plate cone pressure supersonic laminar jet nozzle".split()


def tiny_corpus(n: int = 30) -> dict[str, formats.Document]:
    rng = np.random.default_rng(0)
    return {f"d{i}": formats.Document(f"d{i}", f"title {i % 7}", " ".join(rng.choice(WORDS, size=12)))
            for i in range(n)}


def options(**weights) -> identifiers.Options:
    section = retrieve_config.identifiers()
    section.unigram_vocab_size = 60
    for view in identifiers.VIEWS:
        section[view].weight = weights.get(view, 0.0)
    section.semantic.k, section.semantic.c = 3, 4
    return identifiers.options_from_config(section)


def fake_embed(texts):
    """Deterministic embeddings with cluster structure (by the words a text uses)."""
    return np.asarray([[text.count(word) for word in WORDS] for text in texts], np.float64)


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(1)
    centres = np.asarray([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([centre + rng.normal(scale=0.1, size=(20, 2)) for centre in centres])
    labels = semantic_ids.kmeans(points, 3, np.random.default_rng(0))
    for block in range(3):
        assert len(set(labels[block * 20:(block + 1) * 20])) == 1
    assert len(set(labels)) == 3


@pytest.mark.parametrize("k, c", [(2, 1), (3, 4), (12, 3)])
def test_semantic_paths_are_complete_distinct_and_deterministic(k, c):
    embeddings = np.random.default_rng(2).normal(size=(57, 5))
    paths = semantic_ids.semantic_paths(embeddings, k=k, c=c, seed=7)
    assert len(paths) == 57 and len(set(paths)) == 57
    assert all(path[-1] < c for path in paths) and all(part < max(k, c) for path in paths for part in path[:-1])
    assert semantic_ids.semantic_paths(embeddings, k=k, c=c, seed=7) == paths
    assert semantic_ids.semantic_paths(embeddings, k=k, c=c, seed=8) != paths or k == 2 and c == 1
    leaves = {}
    for path in paths:
        leaves.setdefault(path[:-1], []).append(path[-1])
    assert all(sorted(positions) == list(range(len(positions))) and len(positions) <= c
               for positions in leaves.values())
    strings = semantic_ids.docid_strings(paths, semantic_ids.level_width(k, c))
    assert len(set(strings)) == 57
    assert not any(a != b and b.startswith(a) for a in strings for b in strings)


def test_identical_embeddings_still_get_distinct_ids():
    paths = semantic_ids.semantic_paths(np.ones((9, 3)), k=2, c=2, seed=0)
    assert len(set(paths)) == 9


def test_docid_strings_pad_each_level():
    assert semantic_ids.docid_strings([(3, 0, 12), (1,)], 2) == ["030012", "01"]
    assert semantic_ids.level_width(10, 10) == 1 and semantic_ids.level_width(11, 3) == 2


def test_semantic_docids_tokenise_to_a_prefix_free_distinct_labelling():
    corpus = tiny_corpus()
    tokenizer = identifiers.train_unigram([doc.text for doc in corpus.values()], 60)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    built = identifiers.build(corpus, options(semantic=1.0), tokenizer, fake_embed)
    assert {identifier.view for identifier in built.identifiers} == {"semantic"}
    assert sorted(p for identifier in built.identifiers for p in identifier.passages) == sorted(corpus)
    sequences = [identifier.tokens for identifier in built.identifiers]
    assert len(set(sequences)) == len(corpus)
    assert all(sequence[-1] == 1 and 1 not in sequence[:-1] for sequence in sequences)
    assert not any(a != b and b[:len(a)] == a for a in sequences for b in sequences)
    assert all(token not in (tokenizer.unk_token_id,) for sequence in sequences for token in sequence)
    again = identifiers.build(corpus, options(semantic=1.0), tokenizer, fake_embed)
    assert again == built


def test_unigram_training_gives_the_same_tokenizer_every_time(cranfield_dir):
    # On Cranfield, tokenizers' UnigramTrainer (the trainer before) ordered its pieces differently in about one run
    # in three: a hash map with a per-process random seed decides the order of its floating-point sums.
    texts = [identifiers.passage_text(doc) for doc in formats.read_corpus(cranfield_dir / "corpus.jsonl").values()]
    first = identifiers.train_unigram(texts, 8000)
    for _ in range(4):
        assert identifiers.train_unigram(texts, 8000).backend_tokenizer.to_str() == first.backend_tokenizer.to_str()
    assert 1000 < len(first) <= 8000


def test_unigram_tokenizer_is_t5_kind():
    texts = ["The  wing's\tflow at Mach 2.75 (1956)\n\nover the plate", "boundary layer of a cone at 10 degrees"] * 5
    tokenizer = identifiers.train_unigram(texts, 80)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    assert len(tokenizer) <= 80
    digits = tokenizer.convert_tokens_to_ids([str(digit) for digit in range(10)])
    assert 2 not in digits and len(set(digits)) == 10  # every digit its own piece, even those the texts lack
    ids = tokenizer("at Mach 2.75")["input_ids"]
    assert ids[-1] == 1 and 1 not in ids[:-1]  # EOS appended
    assert tokenizer.convert_ids_to_tokens(ids[-5:-1]) == ["2", ".", "7", "5"]
    assert tokenizer.decode(tokenizer(texts[0])["input_ids"], skip_special_tokens=True) == (
        "The wing's flow at Mach 2.75 (1956) over the plate")  # whitespace runs become one space
    assert 2 not in tokenizer(texts[1])["input_ids"]


def test_unigram_training_refuses_a_vocabulary_below_the_characters_and_an_empty_corpus():
    texts = ["wing flow shock"] * 3  # 11 letters, the word boundary and 10 digits: 22 pieces, with 3 specials 25
    assert len(identifiers.train_unigram(texts, 25)) == 25
    with pytest.raises(ConfigError, match=r"unigram_vocab_size=24: too small for this corpus, whose 22 characters"):
        identifiers.train_unigram(texts, 24)
    with pytest.raises(ConfigError, match="no text to train the Unigram tokenizer on"):
        identifiers.train_unigram([" \n", ""], 60)


def test_views_map_identifiers_to_passages_many_to_many():
    corpus = tiny_corpus(14)
    tokenizer = identifiers.train_unigram([doc.text for doc in corpus.values()], 60)
    built = identifiers.build(corpus, options(title=2.0, atomic=0.5, spans=1.0), tokenizer)
    titles = [identifier for identifier in built.identifiers if identifier.view == "title"]
    assert len(titles) == 7
    assert {identifier.text: identifier.passages for identifier in titles}["title 0"] == ("d0", "d7")
    atomic = {identifier.text: identifier.passages for identifier in built.identifiers if identifier.view == "atomic"}
    assert atomic == {str(i): (f"d{i}",) for i in range(14)}
    spans = [identifier for identifier in built.identifiers if identifier.view == "spans"]
    assert all(len(identifier.text.split()) == 8 for identifier in spans)
    assert all(identifier.text in corpus[p].text for identifier in spans for p in identifier.passages)
    inverse = built.identifiers_of()
    assert [built.identifiers[i].view for i in inverse["d7"]][:2] == ["title", "atomic"]
    assert all("d7" in built.passages_of(i) for i in inverse["d7"])
    weights = identifiers.weights_of(built, options(title=2.0, atomic=0.5, spans=1.0))
    assert weights.tolist() == [{"title": 2.0, "atomic": 0.5, "spans": 1.0}[i.view] for i in built.identifiers]


def test_reversed_titles_put_the_last_component_first_and_are_fingerprinted():
    corpus = {"a": formats.Document("a", "json.decoder.JSONDecoder.decode", "Decode a JSON document."),
              "b": formats.Document("b", "json.dumps", "Serialize an object."),
              "c": formats.Document("c", "  plain title  ", "No dots."),
              "d": formats.Document("d", "", "Untitled.")}
    assert identifiers.title_texts(corpus) == {"a": ["json.decoder.JSONDecoder.decode"], "b": ["json.dumps"],
                                               "c": ["plain title"]}
    assert identifiers.title_texts(corpus, reverse_components=True) == {
        "a": ["decode.JSONDecoder.decoder.json"], "b": ["dumps.json"], "c": ["plain title"]}
    section = retrieve_config.identifiers()
    section.semantic.weight = 0.0
    plain = identifiers.options_from_config(section)
    section.title.reverse_components = True
    reversed_ = identifiers.options_from_config(section)
    tokenizer = identifiers.train_unigram([identifiers.passage_text(doc) for doc in corpus.values()], 60)
    built = identifiers.build(corpus, reversed_, tokenizer)
    assert [identifier.text for identifier in built.identifiers] == ["decode.JSONDecoder.decoder.json", "dumps.json",
                                                                     "plain title"]
    # the default adds nothing to the fingerprint (directories built before the option stay valid)
    assert plain.fingerprint() == {"views": ["title"], "max_tokens": 32}
    assert reversed_.fingerprint() == {"views": ["title"], "max_tokens": 32, "title": "components reversed"}


def test_spans_file_and_its_errors(tmp_path):
    corpus = tiny_corpus(3)
    path = tmp_path / "pseudo.tsv"
    path.write_text("d0\twhat is a wing\nd2\twhat is a wing\n\nd1\tflow\n")
    assert identifiers.read_spans_file(path, corpus) == {"d0": ["what is a wing"], "d2": ["what is a wing"],
                                                         "d1": ["flow"]}
    path.write_text("d0\tfine\nd9\tunknown passage\n")
    with pytest.raises(formats.FormatError, match=r"pseudo.tsv:2.*'d9' is not in the corpus"):
        identifiers.read_spans_file(path, corpus)


def test_bad_weights_are_config_errors():
    section = retrieve_config.identifiers()
    section.title.weight = -1.0
    with pytest.raises(ConfigError, match=r"config.identifiers.title.weight=-1.0"):
        identifiers.options_from_config(section)
    section = retrieve_config.identifiers()
    for view in identifiers.VIEWS:
        section[view].weight = 0.0
    with pytest.raises(ConfigError, match="every view has weight 0"):
        identifiers.options_from_config(section)


def test_directory_round_trip_and_stale_refusal(tmp_path):
    corpus = tiny_corpus(12)
    chosen = options(title=1.0, semantic=1.0)
    built, tokenizer, directory = identifiers.build_or_load(tmp_path / "ids", corpus, chosen, encoder_source="fake",
                                                            embed=fake_embed)
    assert (directory / "tokenizer.json").is_file() and (directory / trie_lib.ARRAYS_FILE).is_file()
    loaded, loaded_tokenizer, _ = identifiers.build_or_load(tmp_path / "ids", corpus, chosen, encoder_source="fake")
    assert loaded == built and loaded_tokenizer("12 3").input_ids == tokenizer("12 3").input_ids
    saved_trie = trie_lib.load(directory)
    np.testing.assert_array_equal(saved_trie.child_tokens, built.trie().child_tokens)
    np.testing.assert_array_equal(saved_trie.identifier_sequence, built.trie().identifier_sequence)
    with pytest.raises(identifiers.StaleIdentifiersError, match="differing: encoder, options"):
        identifiers.build_or_load(tmp_path / "ids", corpus, options(title=1.0), encoder_source="fake")
    changed = dict(corpus, d0=formats.Document("d0", "new", "text"))
    with pytest.raises(identifiers.StaleIdentifiersError, match="corpus_sha256"):
        identifiers.build_or_load(tmp_path / "ids", changed, chosen, encoder_source="fake")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(identifiers.StaleIdentifiersError, match="not an identifiers directory"):
        identifiers.build_or_load(tmp_path / "other", corpus, chosen, encoder_source="fake", embed=fake_embed)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
