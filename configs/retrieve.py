"""Generative retrieval with a T5 student (mode `retrieve`):
`distill-ret retrieve --config=configs/retrieve.py:cranfield --workdir=DIR --config.model.path=MODEL`.

MODEL is a Hugging Face T5 directory or a training run's workdir. The identifiers are built on first use into
identifiers.dir (default <workdir>/identifiers) with the model's tokenizer (or identifiers.tokenizer_dir, or a
Unigram tokenizer trained on the corpus when neither has one). Presets: `cranfield` (../shared/data, test split),
`pydocs` (the pydocs builder's BEIR export).
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

PRESETS = ("cranfield", "pydocs")  # each a data set of common.BEIR_DATA_SETS


def identifiers() -> ml_collections.ConfigDict:
    """`config.identifiers`: the identifier views of DGR (distill_ret.dgr.identifiers); weight 0 turns a view off."""
    section = ml_collections.ConfigDict()
    section.dir = ""  # where the identifiers, their tokenizer and trie are built and reused; "" = <workdir>/identifiers
    section.tokenizer_dir = ""  # tokenizer of the identifiers; "" = the model's, else a Unigram trained on the corpus
    section.unigram_vocab_size = 8000  # vocabulary of the trained Unigram tokenizer (at most the model's vocab_size)
    section.max_tokens = 32  # tokens per identifier, EOS included (longer titles and spans are cut)
    section.title = ml_collections.ConfigDict()
    section.title.weight = 1.0  # the passage title (shared by passages with the same title)
    section.title.reverse_components = False  # spell a dotted title most specific part first (a.b.c -> c.b.a)
    section.atomic = ml_collections.ConfigDict()
    section.atomic.weight = 0.0  # the passage's corpus position as a digit string
    section.semantic = ml_collections.ConfigDict()
    section.semantic.weight = 1.0  # hierarchical k-means docid over dense passage embeddings (NCI)
    section.semantic.k = 10  # clusters per level
    section.semantic.c = 10  # most passages in a leaf
    section.semantic.seed = 0  # seed of the k-means++ initialisation
    section.semantic.iterations = 50  # most Lloyd iterations per clustering
    section.semantic.encoder_dir = common.minilm_dir()  # dense encoder (BERT HF directory, mean-pooled, normalised)
    section.semantic.max_length = 256  # tokens per passage for the dense encoder
    section.spans = ml_collections.ConfigDict()
    section.spans.weight = 0.0  # pseudo-queries (from file) or spans of the passage text
    section.spans.file = ""  # TSV `passage_id<TAB>pseudo-query` per line; "" = spans drawn from the passage
    section.spans.per_passage = 3  # spans drawn per passage
    section.spans.words = 8  # words per span
    section.spans.seed = 0  # seed of the span positions
    return section


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    config = ml_collections.ConfigDict()

    config.data = common.beir_data(preset)
    config.data.split = "test"  # qrels split whose queries are retrieved and evaluated; "" = every query, no metrics

    config.model = ml_collections.ConfigDict()
    config.model.path = ""  # Hugging Face T5 directory or a training run's workdir (required)
    config.model.step = "best"  # a run's "best" or "latest" checkpoint, or a step number

    config.identifiers = identifiers()

    config.retrieve = ml_collections.ConfigDict()
    config.retrieve.num_beams = 10  # beams of the constrained search (identifiers decoded per query)
    config.retrieve.length_penalty = 0.0  # identifier score = log-likelihood / length**length_penalty
    config.retrieve.aggregation = "logsumexp"  # a passage's decoded identifiers per view: sum | max | logsumexp
    config.retrieve.depth = 100  # passages written per query
    config.retrieve.batch_size = 32  # queries per search, rounded up to a multiple of the mesh's data x fsdp
    config.retrieve.max_query_length = 64  # query tokens (longer queries are cut)
    config.retrieve.name = ""  # output name: <workdir>/<name>.trec; "" = retrieve-<split>
    config.retrieve.show_progress = True  # progress bar over query batches

    config.mesh = common.mesh("data_parallel")
    config.eval = common.evaluation("nDCG@10,MRR@10,R@100,MAP")
    return config
