"""DGR (task `dgr`, distill_ret/dgr/task.py): stage 1 generation, mode candidates, stage 2 distillation.

  distill-ret train      --config=configs/dgr.py:cranfield_stage1 --workdir=workdirs/dgr/stage1
  distill-ret candidates --config=configs/dgr.py:cranfield_stage2 --workdir=workdirs/dgr/stage2
  distill-ret train      --config=configs/dgr.py:cranfield_stage2 --workdir=workdirs/dgr/stage2

Presets: `cranfield_stage1` (Cranfield, a small random T5 (d_model 128, 2+2 layers, tied embeddings) with a
Unigram tokenizer trained on the corpus, title identifiers, 2000 steps; best checkpoint by constrained dev
retrieval), `cranfield_stage2` (`config.stage = 2`, 150 steps: from workdirs/dgr/stage1, the candidates of mode
candidates ranked by the cross-encoder in workdirs/cross_encoder; MiniLM as teacher: --config.teacher.kind=dense
--config.teacher.path=<MiniLM dir>
--config.distill.candidates_dir=<another directory>), `pydocs_stage1` / `pydocs_stage2` (the pydocs builder's
passages, 8,000 stage-1 steps; MiniLM dense as teacher), `tiny` / `tiny_stage2` (tests: set data.beir_dir,
identifiers.dir and, in stage 2, model.init_from, teacher.path and distill.candidates_dir). `model.init_from` may
name an HF T5 directory (its tokenizer is then used) or an earlier dgr run. Mode candidates writes to
candidates.output, else distill.candidates_dir, which stage 2 reads.
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

PRESETS = ("cranfield_stage1", "cranfield_stage2", "pydocs_stage1", "pydocs_stage2", "tiny", "tiny_stage2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    tiny = preset.startswith("tiny")
    data_set = "pydocs" if preset.startswith("pydocs") else "cranfield"
    stage = 2 if preset.endswith("stage2") else 1
    root = common.REPO_ROOT / "workdirs" / ("dgr_pydocs" if data_set == "pydocs" else "dgr")
    config = ml_collections.ConfigDict()
    config.task = "dgr"  # registered task (distill_ret/training/tasks.py TASKS)

    config.data = common.beir_data(data_set)
    config.data.beir_dir = "" if tiny else config.data.beir_dir  # BEIR-layout directory; "" = builder data.name's
    config.data.train_split = "train"  # qrels split whose judged pairs give the retrieval pairs
    config.data.min_positive_gain = 1  # judged passages with at least this gain are retrieval targets and positives
    config.data.indexing_input = "passage"  # indexing input: "passage" (title and text), "text" or "spans"
    config.data.indexing_spans = 3  # spans per passage when indexing_input="spans"
    config.data.indexing_span_words = 16  # words per span when indexing_input="spans"
    config.data.retrieval_copies = 1  # copies of the retrieval pairs beside one of the indexing pairs
    config.data.max_input_length = 32 if tiny else 64  # input tokens (passages and queries are cut)
    config.data.seed = 0  # seed of the indexing spans

    config.identifiers = retrieve.identifiers()
    config.identifiers.dir = "" if tiny else str(root / "identifiers")  # required; stage 2 reuses stage 1's
    config.identifiers.unigram_vocab_size = 60 if tiny else 8000  # Unigram vocabulary (<= model.vocab_size)
    config.identifiers.max_tokens = 8 if tiny else 24  # tokens per identifier, EOS included
    config.identifiers.title.weight = 1.0  # the passage title (GENRE style)
    # Atomic docids and drawn spans are off in the real presets: a random T5 cannot memorise 1,400 digit strings in
    # a CPU schedule, and spans drawn beyond the input's cut can only be memorised too; both only take beams from
    # the titles (README "DGR training": 0.011 dev nDCG@10 with them, 0.074 with titles alone).
    config.identifiers.atomic.weight = 1.0 if tiny else 0.0  # the passage's corpus position as a digit string
    config.identifiers.semantic.weight = 0.0  # NCI semantic docid (needs semantic.encoder_dir, e.g. MiniLM)
    config.identifiers.spans.weight = 0.0  # spans of the passage text

    # With init_from the architecture fields come from that model (an earlier stage); dtype and remat always apply.
    config.model = ml_collections.ConfigDict()
    config.model.vocab_size = 64 if tiny else 8000  # holds the identifiers' tokenizer; ids 0 = pad, 1 = EOS
    config.model.d_model = 16 if tiny else 128  # hidden size
    config.model.d_kv = 8 if tiny else 32  # size of one attention head
    config.model.d_ff = 32 if tiny else 512  # feed-forward inner size
    config.model.num_layers = 1 if tiny else 2  # encoder layers
    config.model.num_decoder_layers = 1 if tiny else 2  # decoder layers
    config.model.num_heads = 2 if tiny else 4  # attention heads
    config.model.relative_attention_num_buckets = 8 if tiny else 32  # position buckets
    config.model.relative_attention_max_distance = 16 if tiny else 128  # bucket range
    config.model.dropout_rate = 0.0  # dropout in training (evaluation is deterministic)
    config.model.feed_forward_proj = "relu"  # "relu" (T5 v1.0) or "gated-gelu" (v1.1)
    # Tied: copying an input token into the identifier is then one attention lookup, which a random T5 learns
    # within a few hundred steps (untied, it stayed an unconditional LM of titles here).
    config.model.tie_word_embeddings = not tiny  # share input embedding and output projection
    config.model.dtype = "float32"  # compute dtype: "float32" or "bfloat16" (parameters stay float32)
    config.model.remat = False  # recompute layer activations in the backward pass: less memory, ~1/3 more compute
    config.model.init_from = str(root / "stage1") if stage == 2 and not tiny else ""  # HF T5 dir, dgr run, "" = random
    config.model.init_step = "best"  # when init_from is a run: "best", "latest" or a step number

    if stage == 1:
        # pydocs (2,428 passages, 1,943 train queries) leaves chance only late: seed 0's dev nDCG@10 stays <= 0.014
        # until step 6,000 and reaches 0.026 at 7,000 (README "DGR on pydocs passages"). Cranfield's table: 2,000.
        steps, every = (4, 2) if tiny else ((8000, 1000) if data_set == "pydocs" else (2000, 500))
        config.train = common.train(batch_size=8 if tiny else 32, num_steps=steps,
                                    learning_rate=1e-2 if tiny else 5e-3, warmup_steps=0 if tiny else 100,
                                    log_every=1 if tiny else 50)
    else:
        # 135 train queries: stage 2 overfits them within a few hundred steps at 3e-4 (dev nDCG@10 0.074 -> 0.05),
        # so a small learning rate, a short schedule and the best dev checkpoint.
        config.train = common.train(batch_size=8 if tiny else 4, num_steps=2 if tiny else 150,
                                    learning_rate=1e-2 if tiny else 1e-4, warmup_steps=0 if tiny else 10,
                                    log_every=1 if tiny else 10)
        every = 2 if tiny else 25
    config.mesh = common.mesh("data_parallel")
    config.checkpoint = common.checkpoint(every=every, keep=1, best_metric="dev/nDCG@10", best_mode="max")
    config.evals = ml_collections.ConfigDict()  # named dev evaluators (training.evaluators)
    config.evals.dev = common.evaluator("generative", every)
    config.evals.dev.split = "dev"  # qrels split whose queries are retrieved
    config.evals.dev.num_beams = 4 if tiny else 10  # beams of the constrained search
    config.evals.dev.length_penalty = 0.0  # identifier score = log-likelihood / length**length_penalty
    config.evals.dev.aggregation = "logsumexp"  # a passage's decoded identifiers per view: sum | max | logsumexp
    config.evals.dev.batch_size = 8 if tiny else 32  # queries per search (rounded up to the mesh's data x fsdp)
    config.evals.dev.max_query_length = 16 if tiny else 64  # query tokens
    common.add_measures(config.evals.dev, "nDCG@10,MRR@10,R@10,R@100")
    if stage == 2:
        add_stage_two(config, tiny, data_set, root)
    return config


def add_stage_two(config: ml_collections.ConfigDict, tiny: bool, data_set: str, root) -> None:
    """`stage`, `candidates` (mode candidates), `teacher` and `distill` (stage 2's lists, scores and loss)."""
    config.stage = 2  # 1 = generation (stage 1), 2 = distillation from mode candidates' lists

    config.candidates = ml_collections.ConfigDict()
    config.candidates.student = ""  # the student whose candidates are ranked; "" = model.init_from
    config.candidates.step = ""  # its checkpoint: "best", "latest" or a step number; "" = model.init_step
    config.candidates.split = "train"  # qrels split whose queries with judged positives get candidates
    config.candidates.depth = 3 if tiny else 20  # student passages kept per query (the judged positives are added)
    config.candidates.num_beams = 4 if tiny else 20  # beams of the student's constrained search
    config.candidates.length_penalty = 0.0  # identifier score = log-likelihood / length**length_penalty
    config.candidates.aggregation = "logsumexp"  # a passage's decoded identifiers per view: sum | max | logsumexp
    config.candidates.batch_size = 8 if tiny else 32  # queries per search
    config.candidates.max_query_length = 16 if tiny else 64  # query tokens
    config.candidates.output = ""  # output directory; "" = distill.candidates_dir, else <workdir>/inputs/candidates
    # Pseudo-queries (dgr.candidates, data/pseudo_queries.py): sentences of passage texts searched and ranked like the
    # split's queries, each with its source passage as positive; the paper's recipe uses none (count 0).
    config.candidates.pseudo = ml_collections.ConfigDict()
    config.candidates.pseudo.count = 0  # passages that give one pseudo-query each (0 = none)
    config.candidates.pseudo.seed = 0  # seed of the passages and sentences drawn
    config.candidates.pseudo.min_words = 4 if tiny else 6  # words of a pseudo-query, at least
    config.candidates.pseudo.max_words = 12 if tiny else 30  # and at most
    config.candidates.pseudo.skip_words = 0  # a pseudo-query starts at or after this word of the passage text

    config.teacher = ml_collections.ConfigDict()
    config.teacher.kind = "run_file" if tiny else ("dense" if data_set == "pydocs" else "cross_encoder")  # ranker
    config.teacher.path = "" if tiny else (common.minilm_dir() if data_set == "pydocs" else
                                           str(common.REPO_ROOT / "workdirs" / "cross_encoder"))  # its files
    config.teacher.max_length = 0  # tokens per pair / text; 0 = the checkpoint's training length (256 for HF dirs)
    config.teacher.batch_size = 32  # pairs (or texts) per scoring batch
    config.teacher.bucket_step = 32  # padded lengths are multiples of this
    config.teacher.pooling = "mean"  # dense teacher: "mean" or "cls"
    config.teacher.normalize = True  # dense teacher: L2-normalise embeddings (cosine scores)
    config.teacher.show_progress = not tiny  # progress bar while scoring

    config.distill = ml_collections.ConfigDict()
    config.distill.candidates_dir = "" if tiny else str(root / "stage2" / "inputs" / "candidates")  # required
    config.distill.list_size = 3 if tiny else 8  # passages per ranked list (M)
    config.distill.list_kind = "pinned"  # "pinned" (a positive at rank 0, two lists per query) | "teacher_order"
    config.distill.max_identifiers_per_view = 3  # identifiers of a passage teacher-forced per view (the first ones)
    config.distill.length_normalize = False  # identifier log-likelihood divided by its token count
    config.distill.view_aggregation = "logsumexp"  # a passage's identifiers per view: max | logsumexp
    config.distill.gen_weight = 1.0  # lambda: weight of the positives' generation loss beside the rank loss
    config.distill.loss = "ranknet"  # rank loss: ranknet | ltrgr | listnet | listwise_kl
    config.distill.base_margin = 1.0  # ranknet m_base, in log-likelihood units
    config.distill.gap_margin = 0.5  # ranknet m_gap per rank between the pair, in log-likelihood units
    config.distill.first_weight = 3.0  # ranknet weight of the pairs with the first passage
    config.distill.violated_only = True  # ranknet: mean over violated pairs (as released), else over all pairs
    config.distill.margin = 1.0  # ltrgr margin, in log-likelihood units
    config.distill.temperature = 1.0  # listnet / listwise_kl: student scores are divided by it
    config.distill.teacher_temperature = 1.0  # listnet / listwise_kl: teacher scores are divided by it


def paper_scale(preset: str, *, name: str, max_input_length: int, title_weight: float, stage1_steps: int,
                stage2_steps: int, stage2_every: int, best_metric: str, measures: str) -> ml_collections.ConfigDict:
    """The T5-base config of configs/experiments/<name>_dgr.py (preset `stage1` or `stage2`): builder `name` with
    the build named `name` (so its BEIR export's path is known), passage-span identifiers (plus titles when
    `title_weight` > 0), T5-base v1.0, the paper-scale schedules and, in stage 2, `add_stage_two` with paper-scale
    candidates and lists. What differs between data sets is an argument."""
    root = common.REPO_ROOT / "workdirs" / f"{name}_dgr"
    config = ml_collections.ConfigDict()
    config.task = "dgr"  # registered task (distill_ret/training/tasks.py TASKS)

    config.data = ml_collections.ConfigDict()
    config.data.name = name  # builder of the official files
    common.add_builder_fields(config.data, raw_dir="", data_dir=str(common.DATA_DIR))
    config.data.config_name = name  # fixed build name, so the export's path is known
    config.data.beir_dir = str(common.DATA_DIR / "beir_layout" / name / name)  # the build's BEIR export (read)
    config.data.train_split = "train"  # qrels split whose judged pairs give the retrieval pairs
    config.data.min_positive_gain = 1  # judged passages with at least this gain are retrieval targets
    config.data.indexing_input = "passage"  # indexing input: the passage's title (if any) and text
    config.data.indexing_spans = 3  # spans per passage when indexing_input="spans"
    config.data.indexing_span_words = 16  # words per span when indexing_input="spans"
    config.data.retrieval_copies = 1  # copies of the retrieval pairs beside one of the indexing pairs
    config.data.max_input_length = max_input_length  # input tokens (passages and queries are cut)
    config.data.seed = 0  # seed of the indexing spans

    config.identifiers = retrieve.identifiers()
    config.identifiers.dir = str(root / "identifiers")  # shared
    config.identifiers.max_tokens = 32  # tokens per identifier, EOS included
    config.identifiers.title.weight = title_weight  # the page title (shared by the page's passages); 0 = none
    config.identifiers.atomic.weight = 0.0  # no atomic docids
    config.identifiers.semantic.weight = 0.0  # no semantic docids
    config.identifiers.spans.weight = 1.0  # spans of the passage text (or pseudo-queries from spans.file)
    config.identifiers.spans.per_passage = 10  # spans drawn per passage
    config.identifiers.spans.words = 10  # words per span

    # T5-base (v1.0). With init_from the architecture fields come from that model; dtype and remat always apply.
    config.model = ml_collections.ConfigDict()
    config.model.vocab_size = 32128  # T5's SentencePiece vocabulary (ids 0 = pad, 1 = EOS)
    config.model.d_model = 768  # hidden size
    config.model.d_kv = 64  # size of one attention head
    config.model.d_ff = 3072  # feed-forward inner size
    config.model.num_layers = 12  # encoder layers
    config.model.num_decoder_layers = 12  # decoder layers
    config.model.num_heads = 12  # attention heads
    config.model.relative_attention_num_buckets = 32  # position buckets
    config.model.relative_attention_max_distance = 128  # bucket range
    config.model.dropout_rate = 0.1  # dropout in training (evaluation is deterministic)
    config.model.feed_forward_proj = "relu"  # T5 v1.0
    config.model.tie_word_embeddings = True  # T5 v1.0 ties the lm head to the embedding
    config.model.dtype = "bfloat16"  # compute dtype (parameters stay float32)
    config.model.remat = False  # recompute layer activations in the backward pass: less memory, ~1/3 more compute
    config.model.init_from = ""  # the T5-base HF directory, or a dgr run's workdir; "" = random init
    config.model.init_step = "best"  # when init_from is a run: "best", "latest" or a step number

    if preset == "stage1":
        config.train = common.train(batch_size=256, num_steps=stage1_steps, learning_rate=1e-4, warmup_steps=1000,
                                    log_every=100)
    else:
        config.train = common.train(batch_size=64, num_steps=stage2_steps, learning_rate=5e-5, warmup_steps=200,
                                    log_every=50)
    every = 10000 if preset == "stage1" else stage2_every
    config.mesh = common.mesh("data_parallel")
    config.checkpoint = common.checkpoint(every=every, keep=2, best_metric=best_metric, best_mode="max")
    config.evals = ml_collections.ConfigDict()  # named dev evaluators (training.evaluators)
    config.evals.dev = common.evaluator("generative", every)
    config.evals.dev.split = "dev"  # qrels split whose queries are retrieved
    config.evals.dev.num_beams = 20  # beams of the constrained search
    config.evals.dev.length_penalty = 0.0  # identifier score = log-likelihood / length**length_penalty
    config.evals.dev.aggregation = "logsumexp"  # a passage's decoded identifiers per view: sum | max | logsumexp
    config.evals.dev.batch_size = 256  # queries per search (rounded up to the mesh's data x fsdp)
    config.evals.dev.max_query_length = 32  # query tokens
    common.add_measures(config.evals.dev, measures)
    if preset == "stage2":
        add_stage_two(config, False, name, root)
        config.model.init_from = str(root / "stage1")  # the stage-1 run (its init_step checkpoint; T5 config from it)
        config.candidates.depth = 100  # student passages per query ranked by the teacher (with the judged positives)
        config.candidates.num_beams = 100  # beams of the student's search (a passage may take several: <= 100 kept)
        config.candidates.batch_size = 256  # queries per search (rounded up to the mesh's data x fsdp)
        config.candidates.max_query_length = 32  # query tokens, as evals.dev
        config.teacher.path = ""  # required: a BERT cross-encoder HF directory or cross-encoder train workdir
        config.teacher.batch_size = 256  # (query, passage) pairs per scoring batch
        config.distill.list_size = 10  # passages per ranked list (M); ours: the released M is not known here
        config.distill.base_margin = 1.0  # ranknet m_base in log-likelihood units (released 300 on summed scores)
        config.distill.gap_margin = 0.5  # ranknet m_gap in log-likelihood units (released 100): tune on dev
    return config
