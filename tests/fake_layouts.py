"""Tiny fake data sets in the official file layouts of the paper-scale recipes (tests/test_paper_scale.py):
MS MARCO Document with TREC DL 2019, MS MARCO passage, and Natural Questions as DPR ships it.

Each writer fills a raw directory exactly as the real release names and formats its files (`.gz` where the
release compresses them), with a few topics of real words so that BM25 and the models have something to find.
"""
import gzip
import json
import pathlib

TOPICS = ("wing", "shock", "heat", "flutter", "nozzle", "boundary", "panel", "jet", "cone", "plate", "slab", "noise")


def _write(path: pathlib.Path, lines: list[str], *, gz: bool = False) -> pathlib.Path:
    content = "".join(line + "\n" for line in lines)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _body(index: int, topic: str) -> str:
    """Three sentences (38 words) about `topic`."""
    return (f"The {topic} study number {index} measures the pressure on a model in the tunnel. "
            f"Results for the {topic} agree with the linear theory at low speed. "
            f"A third test of the {topic} shows strong loads near the edge.")


def msmarco_doc(raw: pathlib.Path) -> pathlib.Path:
    """msmarco-docs.tsv.gz (docid, url, title, body) with 12 documents D0..D11; train queries 0-7 judge D<i>, query 99
    is unjudged; dev queries 100-101 judge D6, D7 (dev qrels gzipped); TREC DL 2019 queries 200-202, of which 200
    and 201 are judged with graded gains (2019qrels-docs.txt, `qid Q0 docid rel`)."""
    raw.mkdir(parents=True)
    _write(raw / "msmarco-docs.tsv",
           [f"D{i}\thttp://example.org/{i}\t{topic.title()} tests\t{_body(i, topic)}"
            for i, topic in enumerate(TOPICS)],
           gz=True)
    _write(raw / "msmarco-doctrain-queries.tsv",
           [f"{i}\tpressure results of the {TOPICS[i]} tests" for i in range(8)] + ["99\tan unjudged question"])
    _write(raw / "msmarco-doctrain-qrels.tsv", [f"{i} 0 D{i} 1" for i in range(8)])
    _write(raw / "msmarco-docdev-queries.tsv", ["100\tthe flutter loads", "101\tnozzle pressure results"])
    _write(raw / "msmarco-docdev-qrels.tsv", ["100 0 D6 1", "101 0 D7 1"], gz=True)
    _write(raw / "msmarco-test2019-queries.tsv", ["200\tcone pressure", "201\tplate theory", "202\tnot judged"])
    _write(raw / "2019qrels-docs.txt", ["200 Q0 D8 3", "200 Q0 D1 0", "201 Q0 D9 2", "201 Q0 D10 1"])
    return raw


def msmarco_passage(raw: pathlib.Path) -> pathlib.Path:
    """collection.tsv (pid, text) with 12 passages 0..11; train queries 1000-1007 judge passage i (qrels.train.tsv,
    `qid 0 pid 1` tab-separated as released); dev queries 2000-2001 judge passages 6, 7."""
    raw.mkdir(parents=True)
    _write(raw / "collection.tsv", [f"{i}\t{_body(i, topic)}" for i, topic in enumerate(TOPICS)])
    _write(raw / "queries.train.tsv", [f"{1000 + i}\tpressure results of the {TOPICS[i]} tests" for i in range(8)])
    _write(raw / "qrels.train.tsv", [f"{1000 + i}\t0\t{i}\t1" for i in range(8)])
    _write(raw / "queries.dev.tsv", ["2000\tthe flutter loads", "2001\tnozzle pressure results"])
    _write(raw / "qrels.dev.tsv", ["2000\t0\t6\t1", "2001\t0\t7\t1"])
    return raw


def _quoted(text: str) -> str:
    """A TSV field quoted as DPR's psgs_w100.tsv quotes its texts: in double quotes, inner quotes doubled."""
    return '"' + text.replace('"', '""') + '"'


def dpr_nq(raw: pathlib.Path) -> pathlib.Path:
    """psgs_w100.tsv (header `id text title`, quoted texts) with passages 1..12, two per Wikipedia title;
    nq-train.json: questions 0-7 with passage i + 1 as positive (question 8 has no positive: left out);
    nq-dev.json.gz: 2 questions (passages 7, 8). Other DPR keys (answers, negatives) are present and ignored."""
    raw.mkdir(parents=True)
    texts = [_body(i, topic) + f' It was called the "{topic}" case.' for i, topic in enumerate(TOPICS)]
    rows = [f"{i + 1}\t{_quoted(text)}\t{TOPICS[i].title()}" for i, text in enumerate(texts)]
    _write(raw / "psgs_w100.tsv", ["id\ttext\ttitle", *rows])

    def question(text: str, positives: list[int]) -> dict:
        context = lambda pid: {"title": TOPICS[pid - 1].title(), "text": "...", "score": 10.0, "title_score": 0,
                               "passage_id": str(pid)}
        return {"dataset": "nq_train_psgs_w100", "question": text, "answers": ["x"],
                "positive_ctxs": [context(pid) for pid in positives], "negative_ctxs": [],
                "hard_negative_ctxs": [context(12)]}

    train = [question(f"pressure results of the {TOPICS[i]} tests", [i + 1]) for i in range(8)]
    train.append(question("a question without a gold passage", []))
    (raw / "nq-train.json").write_text(json.dumps(train, indent=2), encoding="utf-8")
    with gzip.open(raw / "nq-dev.json.gz", "wt", encoding="utf-8") as handle:
        json.dump([question("the flutter loads", [7]), question("nozzle pressure results", [8])], handle)
    return raw
