"""Identifier views of a corpus, the identifier <-> passage map, the identifiers' tokenizer, and their directory.

Views (DESIGN §3), each enabled by a positive weight in `config.identifiers.<view>.weight`:
- `title`: the passage's title (many passages may share one; passages without a title get none); with
  `title.reverse_components` its dot-separated components in reverse order, most specific first
  (`json.decoder.JSONDecoder.decode` -> `decode.JSONDecoder.decoder.json`), so that the constrained search's first
  steps decide the part of a qualified name a query is most likely to name;
- `atomic`: the passage's position in the corpus as a decimal string ("0", "1", ...);
- `semantic`: NCI-style hierarchical k-means path over the passages' dense embeddings (`semantic_ids`);
- `spans`: pseudo-queries from a TSV file (`passage_id<TAB>text` per line) when given, else `per_passage` spans of
  `words` consecutive words drawn from the passage text (seeded).
An identifier is one (view, text) pair; it maps to every passage that has that text in that view (many to many).
Its tokens are the tokenizer's ids of the text without special tokens, cut to `max_tokens - 1`, then EOS.

Tokenizer: a given directory's (a local T5 checkpoint's own, or MiniLM's WordPiece, whose [SEP] serves as EOS), or a
Unigram tokenizer trained on the corpus (T5's kind, pieces from SentencePiece's trainer, deterministic; encoded by
`tokenizers`: pad 0, EOS 1, unk 2, every digit its own token, EOS appended to encoded queries). Atomic and semantic
docids are digit strings in that vocabulary; distinct docids must tokenise to distinct sequences (checked).

Directory (`build_or_load`): `identifiers.jsonl` (one identifier a line: view, text, passages, tokens),
`identifiers.json` (format, fingerprint, EOS, vocabulary size, counts), the tokenizer files and the trie
(`trie.save`). The fingerprint covers the corpus, the view options (not the weights, which only weigh scores) and
the tokenizer; a directory built from anything else is refused, never overwritten.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence

import ml_collections
import numpy as np
import sentencepiece
import tokenizers
import transformers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from distill_ret.data import formats
from distill_ret.dgr import semantic_ids
from distill_ret.dgr import trie as trie_lib
from distill_ret.errors import ConfigError, UserError, differing_fields, section_integer, section_number
from distill_ret.hf.identity import load_tokenizer, tokenizer_digest

VIEWS = ("title", "atomic", "semantic", "spans")
IDENTIFIERS_FILE = "identifiers.jsonl"
METADATA_FILE = "identifiers.json"
FORMAT = "distill_ret.identifiers/1"
UNIGRAM_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5
DIGITS = "0123456789"  # each its own Unigram piece, present whether or not the corpus has it

# (passage texts in corpus order) -> [passages, dim] embeddings; the semantic view's dense encoder.
EmbedFn = Callable[[Sequence[str]], np.ndarray]


class StaleIdentifiersError(UserError, ValueError):
    """An identifiers directory was built from another corpus, other options or another tokenizer."""


@dataclasses.dataclass(frozen=True)
class Identifier:
    view: str
    text: str
    passages: tuple[str, ...]  # passage ids, in corpus order
    tokens: tuple[int, ...]    # token ids ending in EOS


@dataclasses.dataclass(frozen=True)
class IdentifierSet:
    """Every identifier of every view, in a fixed order (view order, then first passage, then text)."""

    identifiers: tuple[Identifier, ...]
    vocab_size: int
    eos_id: int

    def views(self) -> np.ndarray:
        """[identifiers] int: index into VIEWS of each identifier's view."""
        return np.asarray([VIEWS.index(identifier.view) for identifier in self.identifiers], np.int64)

    def passages_of(self, index: int) -> tuple[str, ...]:
        return self.identifiers[index].passages

    def identifiers_of(self) -> dict[str, list[int]]:
        """passage id -> indices of its identifiers (the inverse map)."""
        inverse: dict[str, list[int]] = {}
        for index, identifier in enumerate(self.identifiers):
            for passage in identifier.passages:
                inverse.setdefault(passage, []).append(index)
        return inverse

    def trie(self, vocab_size: int | None = None) -> trie_lib.Trie:
        """The prefix trie of the tokenised identifiers (identifier i is trie identifier i), over the tokenizer's
        vocabulary or a model's larger `vocab_size`."""
        return trie_lib.from_sequences([identifier.tokens for identifier in self.identifiers],
                                       vocab_size=vocab_size or self.vocab_size, eos_id=self.eos_id)


@dataclasses.dataclass(frozen=True)
class Options:
    """The view options of `config.identifiers` (validated by `options_from_config`)."""

    weights: Mapping[str, float]  # view -> weight; views with weight 0 are not built
    max_tokens: int
    title_reversed: bool  # titles spelt with their dot-separated components reversed
    unigram_vocab_size: int
    semantic_k: int
    semantic_c: int
    semantic_seed: int
    semantic_iterations: int
    spans_file: str
    spans_per_passage: int
    spans_words: int
    spans_seed: int

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(view for view in VIEWS if self.weights[view] > 0)

    def fingerprint(self) -> dict:
        """The options that decide the identifiers (weights only decide which views exist)."""
        record = {"views": list(self.enabled), "max_tokens": self.max_tokens}
        if "title" in self.enabled and self.title_reversed:
            record["title"] = "components reversed"
        if "semantic" in self.enabled:
            record["semantic"] = [self.semantic_k, self.semantic_c, self.semantic_seed, self.semantic_iterations]
        if "spans" in self.enabled:
            record["spans"] = ([_file_digest(self.spans_file)] if self.spans_file else
                               [self.spans_per_passage, self.spans_words, self.spans_seed])
        return record


def options_from_config(section: ml_collections.ConfigDict, prefix: str = "config.identifiers") -> Options:
    """Validates `config.identifiers` (ConfigError naming the field) and returns its options."""
    weights = {}
    for view in VIEWS:
        weights[view] = section_number(section[view], f"{prefix}.{view}", "weight", 0, hint="0 = view off")
    if not any(weights.values()):
        raise ConfigError(f"{prefix}: every view has weight 0; give at least one of {list(VIEWS)} a positive weight")
    spans_file = section.spans.file
    if weights["spans"] and spans_file and not os.path.isfile(spans_file):
        raise ConfigError(f"{prefix}.spans.file={spans_file!r} is not a file")
    return Options(
        weights=weights, max_tokens=section_integer(section, prefix, "max_tokens", 2),
        title_reversed=section.title.reverse_components,
        unigram_vocab_size=section_integer(section, prefix, "unigram_vocab_size", 16),
        semantic_k=section_integer(section.semantic, f"{prefix}.semantic", "k", 2),
        semantic_c=section_integer(section.semantic, f"{prefix}.semantic", "c", 1),
        semantic_seed=section_integer(section.semantic, f"{prefix}.semantic", "seed", 0),
        semantic_iterations=section_integer(section.semantic, f"{prefix}.semantic", "iterations", 1),
        spans_file=spans_file, spans_per_passage=section_integer(section.spans, f"{prefix}.spans", "per_passage", 1),
        spans_words=section_integer(section.spans, f"{prefix}.spans", "words", 1),
        spans_seed=section_integer(section.spans, f"{prefix}.spans", "seed", 0),
    )


def _file_digest(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ------------------------------------------------------------------------------------------------ tokenizer


def eos_id(tokenizer) -> int:
    """The id that ends an identifier: the tokenizer's EOS, else its [SEP] (WordPiece)."""
    token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if token_id is None:
        raise ConfigError(f"the tokenizer {type(tokenizer).__name__} has neither an EOS nor a SEP token to end "
                          "identifiers with")
    return int(token_id)


def train_unigram(texts: Sequence[str], vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    """A T5-kind Unigram tokenizer trained on `texts`: pad 0, EOS 1, unk 2; digits split one per token; EOS is
    appended to every encoded text (as T5's tokenizer does).

    The pieces and their log-probabilities come from SentencePiece's Unigram trainer (T5's own), on one thread: the same
    texts give the same vocabulary in every process (`tokenizers`' UnigramTrainer sums over a randomly seeded hash map,
    so its scores, the order of its pieces and the ids of identifiers change from run to run). The vocabulary holds at
    most `vocab_size` pieces (fewer where the texts have fewer). The tokenizer that encodes is `tokenizers`': NFKC,
    whitespace runs as one space, "▁" word boundaries, digits split, Viterbi over those pieces.
    """
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(tokenizers.Regex(r"\s+"), " "),
                                       normalizers.Strip()])
    sentences = [normalized for normalized in map(normalizer.normalize_str, texts) if normalized]
    if not sentences:
        raise ConfigError("config.identifiers: the corpus has no text to train the Unigram tokenizer on")
    characters = set("".join(sentences).replace(" ", "▁")) | set(DIGITS + "▁")  # every one a piece of its own
    if vocab_size < len(UNIGRAM_SPECIALS) + len(characters):
        raise ConfigError(f"config.identifiers.unigram_vocab_size={vocab_size}: too small for this corpus, whose "
                          f"{len(characters)} characters (digits and the word boundary included) and "
                          f"{len(UNIGRAM_SPECIALS)} special tokens need {len(UNIGRAM_SPECIALS) + len(characters)}")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model,
        model_type="unigram", vocab_size=vocab_size, hard_vocab_limit=False, num_threads=1,
        normalization_rule_name="identity", remove_extra_whitespaces=False, max_sentence_length=1 << 24,
        character_coverage=1.0, split_digits=True, required_chars=DIGITS,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    pieces = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(pieces.id_to_piece(index), pieces.get_score(index)) for index in range(pieces.get_piece_size())]
    backend = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=UNIGRAM_SPECIALS.index("<unk>")))
    backend.add_special_tokens(list(UNIGRAM_SPECIALS))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(),
                                                     pre_tokenizers.Digits(individual_digits=True)])
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=UNIGRAM_SPECIALS[0],
                                                eos_token=UNIGRAM_SPECIALS[1], unk_token=UNIGRAM_SPECIALS[2])


def tokenize(tokenizer, texts: Sequence[str], max_tokens: int) -> list[tuple[int, ...]]:
    """Token ids of each text without special tokens, cut to `max_tokens - 1`, then EOS."""
    eos = eos_id(tokenizer)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [tuple(row[:max_tokens - 1]) + (eos,) for row in ids]


# ------------------------------------------------------------------------------------------------ views


def title_texts(corpus: Mapping[str, formats.Document], reverse_components: bool = False) -> dict[str, list[str]]:
    """passage id -> [its title] (nothing for an untitled passage), with its dot-separated components in reverse
    order when `reverse_components`."""
    titles = {doc_id: doc.title.strip() for doc_id, doc in corpus.items() if doc.title.strip()}
    if reverse_components:
        titles = {doc_id: ".".join(reversed(title.split("."))) for doc_id, title in titles.items()}
    return {doc_id: [title] for doc_id, title in titles.items()}


def atomic_texts(corpus: Mapping[str, formats.Document]) -> dict[str, list[str]]:
    return {doc_id: [str(position)] for position, doc_id in enumerate(corpus)}


def semantic_texts(corpus: Mapping[str, formats.Document], embeddings: np.ndarray, options: Options
                   ) -> dict[str, list[str]]:
    paths = semantic_ids.semantic_paths(embeddings, k=options.semantic_k, c=options.semantic_c,
                                        seed=options.semantic_seed, iterations=options.semantic_iterations)
    strings = semantic_ids.docid_strings(paths, semantic_ids.level_width(options.semantic_k, options.semantic_c))
    return {doc_id: [text] for doc_id, text in zip(corpus, strings)}


def sampled_spans(text: str, count: int, words: int, rng: np.random.Generator) -> list[str]:
    """`count` spans of `words` consecutive words at random starts (the whole text when it is shorter)."""
    tokens = text.split()
    if len(tokens) <= words:
        return [" ".join(tokens)] if tokens else []
    starts = rng.integers(0, len(tokens) - words + 1, size=count)
    return [" ".join(tokens[start:start + words]) for start in starts]


def span_texts(corpus: Mapping[str, formats.Document], options: Options) -> dict[str, list[str]]:
    """From `spans_file` when set (FormatError naming the file and line), else spans sampled per passage."""
    if options.spans_file:
        return read_spans_file(options.spans_file, corpus)
    spans = {}
    for position, (doc_id, doc) in enumerate(corpus.items()):
        rng = np.random.default_rng([options.spans_seed, position])
        spans[doc_id] = sampled_spans(doc.text, options.spans_per_passage, options.spans_words, rng)
    return spans


def read_spans_file(path: str | os.PathLike, corpus: Mapping[str, formats.Document]) -> dict[str, list[str]]:
    """`passage_id<TAB>text` per line -> passage id -> texts (in file order)."""
    spans: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            doc_id, tab, text = line.partition("\t")
            if not tab or not text.strip():
                raise formats.FormatError(path, number, "expected `passage_id<TAB>text`")
            if doc_id not in corpus:
                raise formats.FormatError(path, number, f"passage id {doc_id!r} is not in the corpus")
            spans.setdefault(doc_id, []).append(text.strip())
    if not spans:
        raise formats.FormatError(path, None, "no pseudo-queries")
    return spans


def group(view: str, texts_by_passage: Mapping[str, Sequence[str]], tokenizer, max_tokens: int
          ) -> list[Identifier]:
    """One identifier per distinct text of a view, mapping to every passage that has it (first-seen order)."""
    passages: dict[str, list[str]] = {}
    for doc_id, texts in texts_by_passage.items():
        for text in dict.fromkeys(texts):
            passages.setdefault(text, []).append(doc_id)
    texts = list(passages)
    return [Identifier(view, text, tuple(passages[text]), tokens)
            for text, tokens in zip(texts, tokenize(tokenizer, texts, max_tokens))]


def _check_docids_distinct(view: str, identifiers: Sequence[Identifier]) -> None:
    seen: dict[tuple[int, ...], str] = {}
    for identifier in identifiers:
        if identifier.tokens in seen:
            raise ConfigError(
                f"config.identifiers.{view}: docids {seen[identifier.tokens]!r} and {identifier.text!r} tokenise to "
                f"the same tokens {list(identifier.tokens)}; use a tokenizer that spells digits (or raise "
                "config.identifiers.max_tokens)")
        seen[identifier.tokens] = identifier.text


def build(corpus: Mapping[str, formats.Document], options: Options, tokenizer,
          embed: EmbedFn | None = None) -> IdentifierSet:
    """The identifiers of every enabled view. `embed` (passage texts -> embeddings) is needed for `semantic`."""
    if not corpus:
        raise ConfigError("config.data: the corpus is empty; there is nothing to identify")
    identifiers = []
    for view in options.enabled:
        if view == "title":
            texts = title_texts(corpus, options.title_reversed)
        elif view == "atomic":
            texts = atomic_texts(corpus)
        elif view == "semantic":
            if embed is None:
                raise ValueError("the semantic view needs an embedding function")
            texts = semantic_texts(corpus, embed([passage_text(doc) for doc in corpus.values()]), options)
        else:
            texts = span_texts(corpus, options)
        view_identifiers = group(view, texts, tokenizer, options.max_tokens)
        if view in ("atomic", "semantic"):
            _check_docids_distinct(view, view_identifiers)
        identifiers.extend(view_identifiers)
    if not identifiers:
        raise ConfigError(f"config.identifiers: the views {list(options.enabled)} give no identifier for this "
                          "corpus (e.g. titles on an untitled corpus)")
    return IdentifierSet(tuple(identifiers), vocab_size=len(tokenizer), eos_id=eos_id(tokenizer))


def passage_text(document: formats.Document) -> str:
    """What the semantic view embeds and the Unigram tokenizer learns from: title, then text."""
    return f"{document.title}\n{document.text}" if document.title else document.text


# ------------------------------------------------------------------------------------------------ directory


def corpus_digest(corpus: Mapping[str, formats.Document]) -> str:
    digest = hashlib.sha256()
    for doc_id, doc in corpus.items():
        digest.update(json.dumps([doc_id, doc.title, doc.text], ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def fingerprint(corpus: Mapping[str, formats.Document], options: Options, tokenizer_source: str,
                encoder_source: str = "") -> dict:
    """What a saved identifiers directory must match: corpus, options, tokenizer, and the semantic view's encoder."""
    record = {"corpus_sha256": corpus_digest(corpus), "options": options.fingerprint(), "tokenizer": tokenizer_source}
    if "semantic" in options.enabled:
        record["encoder"] = encoder_source
    return record


def write(directory: str | os.PathLike, identifier_set: IdentifierSet, tokenizer, record: dict) -> pathlib.Path:
    """Writes the identifiers, the tokenizer and the trie into a new `directory` (staged, then renamed)."""
    with formats.atomic_directory(directory) as staging:
        tokenizer.save_pretrained(str(staging))
        trie_lib.save(identifier_set.trie(), staging)
        with formats.atomic_write(staging / IDENTIFIERS_FILE) as handle:
            for identifier in identifier_set.identifiers:
                handle.write(json.dumps({"view": identifier.view, "identifier": identifier.text,
                                         "passages": list(identifier.passages), "tokens": list(identifier.tokens)},
                                        ensure_ascii=False) + "\n")
        metadata = {"format": FORMAT, "fingerprint": record, "vocab_size": identifier_set.vocab_size,
                    "eos_id": identifier_set.eos_id, "num_identifiers": len(identifier_set.identifiers),
                    "identifiers_sha256": _file_digest(staging / IDENTIFIERS_FILE)}
        with formats.atomic_write(staging / METADATA_FILE) as handle:
            json.dump(metadata, handle, indent=1, sort_keys=True)
    return pathlib.Path(directory)


def read_metadata(directory: str | os.PathLike) -> dict:
    path = pathlib.Path(directory) / METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT!r}")
        return metadata
    except (OSError, ValueError, AttributeError) as error:
        raise formats.FormatError(path, None, f"not an identifiers metadata file ({error})") from None


def read(directory: str | os.PathLike) -> IdentifierSet:
    """The identifiers that `write` saved (FormatError naming the file and line for a changed or broken file)."""
    directory = pathlib.Path(directory)
    metadata = read_metadata(directory)
    path = directory / IDENTIFIERS_FILE
    if not path.is_file() or _file_digest(path) != metadata.get("identifiers_sha256"):
        raise formats.FormatError(path, None, f"missing, or not the file {directory / METADATA_FILE} records "
                                              "(changed or half-written); rebuild the identifiers")
    identifiers = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
                identifiers.append(Identifier(str(row["view"]), str(row["identifier"]),
                                              tuple(str(p) for p in row["passages"]),
                                              tuple(int(t) for t in row["tokens"])))
            except (ValueError, KeyError, TypeError) as error:
                raise formats.FormatError(path, number, f"not an identifier record ({error})") from None
    return IdentifierSet(tuple(identifiers), vocab_size=int(metadata["vocab_size"]), eos_id=int(metadata["eos_id"]))


def build_or_load(directory: str | os.PathLike, corpus: Mapping[str, formats.Document], options: Options, *,
                  tokenizer_dir: str = "", encoder_source: str = "", embed: EmbedFn | None = None
                  ) -> tuple[IdentifierSet, object, pathlib.Path]:
    """(identifiers, tokenizer, directory): read from `directory` when it was built from these inputs, else built
    and written there. The tokenizer is `tokenizer_dir`'s, or a Unigram one trained on the corpus ("" ).

    A directory built from other inputs is refused (StaleIdentifiersError); a non-empty directory this module did
    not write is never written into.
    """
    directory = pathlib.Path(directory).absolute()
    if tokenizer_dir:
        tokenizer = load_tokenizer(tokenizer_dir)
        tokenizer_source = f"dir:{tokenizer_digest(tokenizer)}"
    else:
        tokenizer = None
        tokenizer_source = f"unigram-sentencepiece:{options.unigram_vocab_size}"
    record = fingerprint(corpus, options, tokenizer_source, encoder_source)
    if directory.exists():
        if not (directory / METADATA_FILE).is_file():
            raise StaleIdentifiersError(f"{directory} exists and is not an identifiers directory (no {METADATA_FILE}); "
                                        "choose another config.identifiers.dir")
        saved = read_metadata(directory)["fingerprint"]
        if saved != record:
            raise StaleIdentifiersError(
                f"{directory / METADATA_FILE}: these identifiers were built from other inputs (differing: "
                f"{', '.join(differing_fields(saved, record))}); "
                "choose another config.identifiers.dir to build new ones")
        return read(directory), load_tokenizer(directory), directory
    if tokenizer is None:
        tokenizer = train_unigram([passage_text(doc) for doc in corpus.values()], options.unigram_vocab_size)
    identifier_set = build(corpus, options, tokenizer, embed)
    write(directory, identifier_set, tokenizer, record)
    return identifier_set, load_tokenizer(directory), directory


def weights_of(identifier_set: IdentifierSet, options: Options) -> np.ndarray:
    """[identifiers] float: the weight of each identifier's view."""
    return np.asarray([options.weights[identifier.view] for identifier in identifier_set.identifiers], np.float64)
