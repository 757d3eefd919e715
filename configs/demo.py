"""The built-in demo (mode `demo`): `distill-ret demo --config=configs/demo.py --workdir=workdirs/demo`.

Presets: `full` (default: the whole standard library as the pydocs corpus) and `small` (a few packages, for a
quick look or a smoke test). Everything, including the built data, lives under the workdir.
"""
import ml_collections

# preset -> stdlib packages read by the pydocs builder; () = all but the excluded ones
PRESETS = {
    "full": (),
    "small": ("email", "http", "json"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = arg or "full"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for configs/demo.py; presets: {sorted(PRESETS)}")
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.name = "pydocs"  # builder of the demo corpus
    config.data.raw_dir = ""  # stdlib source directory; "" = this Python's
    config.data.data_dir = ""  # TFDS output root; "" = <workdir>/tfds
    config.data.config_name = ""  # name of the built variant; "" = derived from the inputs and options
    config.data.packages = PRESETS[preset]  # top-level stdlib packages to read; () = all but the excluded ones
    config.data.dev_fraction = 0.1  # fraction of queries in the dev split (by a hash of the qualified name)
    config.data.test_fraction = 0.1  # fraction of queries in the test split
    config.data.export_beir = True  # write the BEIR-layout exports the stages read
    config.data.level = "passages"  # placeholder: each stage sets the level (see demo.levels) it reads

    config.demo = ml_collections.ConfigDict()
    config.demo.stages = ""  # comma-separated stage names to run (in their fixed order); "" = all stages
    config.demo.split = "test"  # query split that is searched and evaluated
    config.demo.levels = "passages,documents"  # retrieval units: docstring passages and/or whole modules

    config.bm25 = ml_collections.ConfigDict()
    config.bm25.k1 = 1.5  # term-frequency saturation
    config.bm25.b = 0.75  # document-length normalisation
    config.bm25.delta = 0.5  # term-score floor, used by the bm25l and bm25+ methods only
    config.bm25.method = "lucene"  # bm25s scoring variant: robertson, atire, bm25l, bm25+ or lucene
    config.bm25.stopwords = "english"  # stop-word list removed from queries and documents; "" keeps all tokens
    config.bm25.stemmer = ""  # PyStemmer language such as "english"; "" = off
    config.bm25.top_k = 100  # documents kept per query in the runs

    config.eval = ml_collections.ConfigDict()
    config.eval.measures = "nDCG@10,MRR@10,MRR@100,R@5,R@20,R@100,MAP"  # ir-measures names, comma-separated
    config.eval.relevance_level = 1  # minimum gain counted as relevant by binary measures (R@k, MRR, MAP)
    config.eval.per_query = False  # also write per-query TSVs beside the metrics
    return config
