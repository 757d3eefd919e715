"""DGR stage 1 (task `dgr`, distill_ret/dgr/task.py): a T5 student learns to generate passage identifiers.

  distill-ret train --config=configs/dgr.py:cranfield_stage1 --workdir=workdirs/dgr/stage1

Presets: `cranfield_stage1` (Cranfield, a random T5-small-like student with a Unigram tokenizer trained on the
corpus, best checkpoint by constrained dev retrieval), `tiny` (tests: set data.beir_dir and identifiers.dir on the
command line). `model.init_from` may name an HF T5 directory (its tokenizer is then used) or an earlier dgr run.
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)
_RETRIEVE = importlib.util.spec_from_file_location("configs_retrieve",
                                                   pathlib.Path(__file__).with_name("retrieve.py"))
retrieve = importlib.util.module_from_spec(_RETRIEVE)
_RETRIEVE.loader.exec_module(retrieve)

PRESETS = ("cranfield_stage1", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    tiny = preset == "tiny"
    config = ml_collections.ConfigDict()
    config.task = "dgr"  # registered task (distill_ret/training/tasks.py TASKS)

    config.data = common.beir_data("cranfield")
    config.data.beir_dir = "" if tiny else config.data.beir_dir  # BEIR-layout directory (required)
    config.data.train_split = "train"  # qrels split whose judged pairs give the retrieval pairs
    config.data.min_positive_gain = 1  # judged passages with at least this gain are retrieval targets
    config.data.indexing_input = "passage"  # indexing input: "passage" (title and text) or "spans" (drawn spans)
    config.data.indexing_spans = 3  # spans per passage when indexing_input="spans"
    config.data.indexing_span_words = 16  # words per span when indexing_input="spans"
    config.data.retrieval_copies = 1  # copies of the retrieval pairs beside one of the indexing pairs
    config.data.max_input_length = 32 if tiny else 128  # input tokens (passages and queries are cut)
    config.data.seed = 0  # seed of the indexing spans

    config.identifiers = retrieve.identifiers()
    config.identifiers.dir = "" if tiny else str(common.REPO_ROOT / "workdirs" / "dgr" / "identifiers")  # required
    config.identifiers.unigram_vocab_size = 60 if tiny else 8000  # Unigram vocabulary (<= model.vocab_size)
    config.identifiers.max_tokens = 8 if tiny else 24  # tokens per identifier, EOS included
    config.identifiers.title.weight = 1.0  # the passage title
    config.identifiers.atomic.weight = 1.0  # the passage's corpus position as a digit string
    config.identifiers.semantic.weight = 0.0  # NCI semantic docid (needs semantic.encoder_dir, e.g. MiniLM)
    config.identifiers.spans.weight = 0.0 if tiny else 1.0  # spans of the passage text

    config.model = ml_collections.ConfigDict()
    config.model.vocab_size = 64 if tiny else 8000  # holds the identifiers' tokenizer; ids 0 = pad, 1 = EOS
    config.model.d_model = 16 if tiny else 512  # hidden size
    config.model.d_kv = 8 if tiny else 64  # size of one attention head
    config.model.d_ff = 32 if tiny else 2048  # feed-forward inner size
    config.model.num_layers = 1 if tiny else 4  # encoder layers
    config.model.num_decoder_layers = 1 if tiny else 4  # decoder layers
    config.model.num_heads = 2 if tiny else 8  # attention heads
    config.model.relative_attention_num_buckets = 8 if tiny else 32  # position buckets
    config.model.relative_attention_max_distance = 16 if tiny else 128  # bucket range
    config.model.dropout_rate = 0.0 if tiny else 0.1  # dropout in training (evaluation is deterministic)
    config.model.feed_forward_proj = "relu"  # "relu" (T5 v1.0) or "gated-gelu" (v1.1)
    config.model.tie_word_embeddings = False  # share input embedding and output projection
    config.model.dtype = "float32"  # compute dtype: "float32" or "bfloat16" (parameters stay float32)
    config.model.init_from = ""  # an HF T5 directory or a dgr run's workdir; "" = random init with the fields above
    config.model.init_step = "best"  # when init_from is a run: "best", "latest" or a step number

    config.train = common.train(batch_size=8 if tiny else 64, num_steps=4 if tiny else 3000,
                                learning_rate=1e-2 if tiny else 1e-3, warmup_steps=0 if tiny else 100,
                                log_every=1 if tiny else 50)
    config.mesh = common.mesh("data_parallel")
    config.checkpoint = common.checkpoint(every=2 if tiny else 500, keep=1, best_metric="dev/nDCG@10",
                                          best_mode="max")
    config.evals = ml_collections.ConfigDict()  # named dev evaluators (training.evaluators)
    config.evals.dev = common.evaluator("generative", 2 if tiny else 500)
    config.evals.dev.split = "dev"  # qrels split whose queries are retrieved
    config.evals.dev.num_beams = 4 if tiny else 20  # beams of the constrained search
    config.evals.dev.length_penalty = 0.0  # identifier score = log-likelihood / length**length_penalty
    config.evals.dev.aggregation = "logsumexp"  # a passage's decoded identifiers per view: sum | max | logsumexp
    config.evals.dev.batch_size = 8 if tiny else 32  # queries per search (rounded up to the mesh's data x fsdp)
    config.evals.dev.max_query_length = 16 if tiny else 64  # query tokens
    common.add_measures(config.evals.dev, "nDCG@10,MRR@10,R@10,R@100")
    return config
