"""Fixtures for the teacher tests: a tiny BEIR data set, a tiny WordPiece tokenizer and a tiny PyTorch cross-encoder
saved in Hugging Face layout (the numerical reference)."""
import pathlib

import torch
import transformers

from distill_ret.data import formats
from tests.bert_helpers import randomize_torch

WORDS = ("wing lift drag flow heat slab boundary layer shock wave supersonic pressure jet noise plate buckling "
         "flutter panel cone nose heating laminar turbulent transition").split()
DOCS = {
    f"d{i}": formats.Document(f"d{i}", " ".join(WORDS[i % 24: i % 24 + 2]),
                              " ".join(WORDS[(i * 5 + k) % 24] for k in range(6 + i % 5)))
    for i in range(16)
}
QUERIES = {
    "q1": "wing lift", "q2": "heat slab", "q3": "shock wave", "q4": "jet noise", "q5": "plate buckling",
    "q6": "laminar flow", "q7": "supersonic cone", "q8": "boundary layer",
}
QRELS = {
    "train": {"q1": {"d0": 2, "d5": 1}, "q2": {"d4": 3}, "q3": {"d6": 1, "d11": 2}, "q4": {"d8": 1}},
    "dev": {"q5": {"d9": 2}, "q6": {"d3": 1, "d14": 1}},
    "test": {"q7": {"d12": 1}, "q8": {"d7": 2}},
}


def write_beir(directory: pathlib.Path) -> pathlib.Path:
    formats.write_beir(formats.BeirDataset(corpus=DOCS, queries=QUERIES, qrels=QRELS), directory)
    return directory


def write_tokenizer(directory: pathlib.Path) -> transformers.PreTrainedTokenizerBase:
    """An uncased WordPiece tokenizer over WORDS (plus the BERT specials), saved in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = transformers.BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def write_torch_cross_encoder(directory: pathlib.Path, seed: int = 0) -> transformers.BertForSequenceClassification:
    """A random tiny BertForSequenceClassification (one label) + tokenizer in `directory`."""
    tokenizer = write_tokenizer(directory)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                     num_labels=1)
    torch.manual_seed(seed)
    model = randomize_torch(transformers.BertForSequenceClassification(config), seed, scale=0.05)
    model.save_pretrained(directory, safe_serialization=True)
    return model


def torch_scores(model, tokenizer, queries, passages, max_length) -> list[float]:
    encoded = tokenizer(list(queries), list(passages), truncation="longest_first", max_length=max_length,
                        padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**encoded).logits[:, 0].tolist()
