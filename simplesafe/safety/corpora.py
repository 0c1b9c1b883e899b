"""Loaders for the labelled hate/toxicity corpora in ``../shared/data``.

Each loader returns a list of :class:`LabelledText` (``text``, ``label`` 1 = hateful/toxic,
0 = benign, ``source``, ``id``, ``group``). ``group`` is the unit that must never straddle
train and test (a template id, a post, a Wikipedia revision); :mod:`simplesafe.safety.split`
merges it with near-duplicate groups. Label schemes follow each folder's ``SOURCE.md``:

- ToxiGen annotated (Hartvigsen et al., ACL 2022): ``toxicity_human >= 4`` toxic, ``<= 2``
  benign, rows in between dropped; the ``b'...'`` bytes-literal wrapper is stripped.
- ToxiGen demonstrations + ``prompts.tar.gz``: label = file-name prefix (``hate_`` / ``neutral_``);
  prompt lines are ``- s1\\n- s2 ...`` with a literal backslash-n and are split into sentences.
- Latent Hatred stage 1 (ElSherief et al., EMNLP 2021): implicit_hate / explicit_hate -> 1, not_hate -> 0.
- Stormfront (de Gibert et al., 2018): hate -> 1, noHate -> 0, relation and idk/skip dropped.
- ConversationAI sentence templates: toxic -> 1, nontoxic -> 0, group = template name.
- Wikipedia Talk non-fuzzed test set: ``toxic`` True/False (the fuzzed copy is never read: same comments).
- Jigsaw sample: toxic = any of the six labels (101 rows; a smoke test, never for training).
- ``contrast``: generated minimal pairs (:mod:`simplesafe.safety.contrast`), no folder needed.
- ``functional``: generated HateCheck-style functional cases from the train/calib templates
  only (:mod:`simplesafe.safety.functional`); its test templates are never loaded here.

Malformed rows raise :class:`~simplesafe.errors.DataError` naming file, line and field.

    from simplesafe.safety.corpora import load_all
    rows = load_all(shared_data_dir(), limits={"implicit_hate": 4000}, seed=0)
"""

from __future__ import annotations

import ast
import csv
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from simplesafe.errors import DataError

csv.field_size_limit(1 << 24)


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: int
    source: str
    id: str
    group: str


_WS = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Collapse whitespace and drop the Detox ``NEWLINE_TOKEN`` / Twitter quote-run artefacts."""
    text = text.replace("NEWLINE_TOKEN", " ").replace("TAB_TOKEN", " ")
    text = re.sub(r'(?:"\s*){2,}', '" ', text)  # latent-hatred's stray `" " "` runs
    return _WS.sub(" ", text).strip().strip('"').strip()


def strip_bytes_literal(raw: str) -> str:
    """ToxiGen stores ``b'text'`` / ``b"text"``; return the decoded text."""
    s = raw.strip()
    if len(s) >= 3 and s[0] == "b" and s[1] in "'\"" and s[-1] == s[1]:
        try:
            value = ast.literal_eval(s)
        except (ValueError, SyntaxError):
            return s[2:-1]
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return str(value)
    return s


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataError(path, None, None, "file not found (is ../shared/data complete? see its SOURCE.md)")
    return path


def _dict_rows(path: Path, delimiter: str = ","):
    """(line, row) pairs of a headed CSV/TSV; the line counts physical lines (quoted newlines included)."""
    with open(_need(path), encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        for row in reader:
            yield reader.line_num, row


def _field(row: dict, field: str, path: Path, line: int) -> str:
    value = row.get(field)
    if value is None:
        raise DataError(path, line, field, "missing field")
    return value


def load_toxigen_annotated(root: Path) -> list[LabelledText]:
    path = root / "toxigen-annotated" / "toxigen.csv"
    out = []
    for line, row in _dict_rows(path):
        raw = _field(row, "toxicity_human", path, line)
        try:
            score = float(raw)
        except ValueError:
            raise DataError(path, line, "toxicity_human", f"not a number: {raw!r}") from None
        if score >= 4:
            label = 1
        elif score <= 2:
            label = 0
        else:
            continue  # ambiguous middle ratings: dropped, as SOURCE.md advises
        text = clean_text(strip_bytes_literal(_field(row, "text", path, line)))
        if text:
            out.append(LabelledText(text, label, "toxigen_annotated", f"toxigen:{line}", f"toxigen:{line}"))
    return out


def _prompt_sentences(line: str) -> list[str]:
    parts = re.split(r"\\n|\n", line)
    return [p.strip().lstrip("-").strip() for p in parts if p.strip().lstrip("-").strip()]


def load_toxigen_demonstrations(root: Path, include_prompts: bool = True) -> list[LabelledText]:
    """Human-written demonstrations plus the distinct sentences of the generation prompts."""
    base = root / "toxigen-demonstrations-prompts"
    seen: dict[str, LabelledText] = {}

    def add(text: str, name: str, ident: str):
        label = _label_from_name(name, base / ident)
        text = clean_text(text)
        if text and text not in seen:
            seen[text] = LabelledText(text, label, "toxigen_demonstrations", ident, ident)

    demo_dir = _need(base / "demonstrations")
    for path in sorted(demo_dir.rglob("*.txt")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for sent in _prompt_sentences(line):  # a few lines end in a literal "\\n"
                add(sent, path.name, f"demo:{path.relative_to(demo_dir)}:{i}")
    if include_prompts:
        with tarfile.open(_need(base / "prompts.tar.gz"), "r:gz") as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if not (member.isfile() and member.name.endswith(".txt")):
                    continue
                data = tar.extractfile(member).read().decode("utf-8")
                for i, line in enumerate(data.splitlines(), 1):
                    for sent in _prompt_sentences(line):
                        add(sent, Path(member.name).name, f"prompt:{member.name}:{i}")
    return list(seen.values())


def _label_from_name(name: str, path: Path) -> int:
    if name.startswith("hate_"):
        return 1
    if name.startswith("neutral_"):
        return 0
    raise DataError(path, None, None, "file name must start with 'hate_' or 'neutral_' (that prefix is the label)")


IMPLICIT_HATE_LABELS = {"implicit_hate": 1, "explicit_hate": 1, "not_hate": 0}


def load_implicit_hate(root: Path) -> list[LabelledText]:
    path = root / "implicit-hate-latent-hatred" / "implicit_hate_v1_stg1_posts.tsv"
    out = []
    for line, row in _dict_rows(path, delimiter="\t"):
        cls = _field(row, "class", path, line).strip()
        if cls not in IMPLICIT_HATE_LABELS:
            raise DataError(path, line, "class", f"unknown class {cls!r}; expected one of {sorted(IMPLICIT_HATE_LABELS)}")
        text = clean_text(_field(row, "post", path, line))
        if text:
            out.append(LabelledText(text, IMPLICIT_HATE_LABELS[cls], "implicit_hate", f"ih:{line}", f"ih:{line}"))
    return out


STORMFRONT_LABELS = {"hate": 1, "noHate": 0}
STORMFRONT_DROPPED = {"relation", "idk/skip"}


def load_stormfront(root: Path) -> list[LabelledText]:
    base = root / "stormfront-hate-speech"
    meta = base / "annotations_metadata.csv"
    labels: dict[str, tuple[int, int]] = {}
    for line, row in _dict_rows(meta):
        lab = _field(row, "label", meta, line).strip()
        if lab in STORMFRONT_DROPPED:
            continue
        if lab not in STORMFRONT_LABELS:
            raise DataError(meta, line, "label", f"unknown label {lab!r}; expected hate, noHate, relation or idk/skip")
        labels[_field(row, "file_id", meta, line).strip()] = (STORMFRONT_LABELS[lab], line)
    texts: dict[str, str] = {}
    with tarfile.open(_need(base / "stormfront_sentences.tar.gz"), "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith("all_files/") and member.name.endswith(".txt"):
                fid = Path(member.name).stem
                if fid in labels:
                    texts[fid] = tar.extractfile(member).read().decode("utf-8", errors="replace")
    out = []
    for fid, (label, line) in sorted(labels.items(), key=lambda kv: kv[1][1]):
        if fid not in texts:
            raise DataError(meta, line, "file_id", f"no all_files/{fid}.txt in stormfront_sentences.tar.gz")
        text = clean_text(texts[fid])
        if text:
            # Sentences of one post share context (and often a topic): keep a post on one side.
            out.append(LabelledText(text, label, "stormfront", f"sf:{fid}", f"sf:{fid.split('_')[0]}"))
    return out


TEMPLATE_LABELS = {"toxic": 1, "nontoxic": 0}


def load_sentence_templates(root: Path) -> list[LabelledText]:
    path = root / "conversationai-sentence-templates-wiki-toxicity" / "en_sentence_templates.csv"
    out = []
    for line, row in _dict_rows(path):
        tox = _field(row, "toxicity", path, line).strip()
        if tox not in TEMPLATE_LABELS:
            raise DataError(path, line, "toxicity", f"expected toxic or nontoxic, got {tox!r}")
        template = _field(row, "template", path, line).strip()
        text = clean_text(_field(row, "phrase", path, line))
        if text:
            out.append(LabelledText(text, TEMPLATE_LABELS[tox], "templates", f"tpl:{line}", f"template:{template}"))
    return out


def _bool(value: str, path: Path, line: int, field: str) -> int:
    v = value.strip().lower()
    if v in ("true", "1", "1.0"):
        return 1
    if v in ("false", "0", "0.0"):
        return 0
    raise DataError(path, line, field, f"expected True/False or 1/0, got {value!r}")


def load_wiki_talk(root: Path) -> list[LabelledText]:
    path = root / "conversationai-sentence-templates-wiki-toxicity" / "toxicity_nonfuzzed_testset.csv"
    out = []
    for line, row in _dict_rows(path):
        label = _bool(_field(row, "toxic", path, line), path, line, "toxic")
        rev = _field(row, "rev_id", path, line).strip()
        text = clean_text(_field(row, "comment", path, line))
        if text:
            out.append(LabelledText(text, label, "wiki_talk", f"wiki:{rev}", f"wiki:{rev}"))
    return out


JIGSAW_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")


def load_jigsaw_sample(root: Path) -> list[LabelledText]:
    """101 Jigsaw comments; label = any of the six Jigsaw labels (smoke test only)."""
    path = root / "jigsaw-toxic-comments-sample" / "test_examples.csv"
    out = []
    for line, row in _dict_rows(path):
        label = max(_bool(_field(row, f, path, line), path, line, f) for f in JIGSAW_LABELS)
        text = clean_text(_field(row, "comment_text", path, line))
        if text:
            out.append(LabelledText(text, label, "jigsaw_sample", f"jigsaw:{line}", f"jigsaw:{line}"))
    return out


def load_simple_wikipedia(root: Path) -> list[LabelledText]:
    """Simple Wikipedia sentences as assumed-benign general text (label 0).

    Not a hate corpus: it teaches the head that encyclopedic mentions of groups, wars and
    religions are not hate, which keeps the false-positive rate on ordinary answers low.
    """
    path = root / "d-wikipedia-simple-articles" / "valid.tgt"
    out = []
    for i, line in enumerate(_need(path).read_text(encoding="utf-8").splitlines(), 1):
        # Articles are one per line; the first sentence or two is a natural short text.
        text = clean_text(" ".join(line.split(" . ")[:2]))
        if len(text.split()) >= 5:
            out.append(LabelledText(text, 0, "simple_wikipedia", f"swiki:{i}", f"swiki:{i}"))
    return out


def load_contrast(root: Path) -> list[LabelledText]:
    """Generated minimal pairs: hateful claims vs the same claims negated or refuted (:mod:`simplesafe.safety.contrast`)."""
    from simplesafe.safety.contrast import contrast_rows

    return contrast_rows()


def load_functional(root: Path) -> list[LabelledText]:
    """Generated HateCheck-style functional cases, train and calib templates only (:mod:`simplesafe.safety.functional`)."""
    from simplesafe.safety.functional import functional_rows

    return functional_rows()


LOADERS: dict[str, Callable[[Path], list[LabelledText]]] = {
    "toxigen_annotated": load_toxigen_annotated,
    "toxigen_demonstrations": load_toxigen_demonstrations,
    "implicit_hate": load_implicit_hate,
    "stormfront": load_stormfront,
    "templates": load_sentence_templates,
    "wiki_talk": load_wiki_talk,
    "simple_wikipedia": load_simple_wikipedia,
    "jigsaw_sample": load_jigsaw_sample,
    "contrast": load_contrast,
    "functional": load_functional,
}


def subsample(rows: list[LabelledText], limit: int | None, seed: int, by_group: bool = False) -> list[LabelledText]:
    """Seeded label-stratified subsample of at most ``limit`` rows.

    ``by_group`` spreads the sample evenly over groups (templates: each template keeps
    the same share, so the 72k ``name_adj`` rows do not drown the rest).
    """
    if limit is None or len(rows) <= limit:
        return list(rows)
    rng = random.Random(seed)
    keyfn = (lambda r: (r.group, r.label)) if by_group else (lambda r: r.label)
    buckets: dict = {}
    for r in rows:
        buckets.setdefault(keyfn(r), []).append(r)
    keys = sorted(buckets)
    # Water-filling: small buckets keep everything, the rest share what is left equally.
    quota = {}
    left, remaining = limit, sorted(keys, key=lambda k: len(buckets[k]))
    while remaining:
        share = left // len(remaining)
        k = remaining.pop(0)
        quota[k] = min(len(buckets[k]), share)
        left -= quota[k]
    picked = []
    for k in keys:
        b = list(buckets[k])
        rng.shuffle(b)
        picked.extend(b[: quota[k]])
    picked.sort(key=lambda r: r.id)
    return picked


CORPUS_DIRS = {
    "toxigen_annotated": "toxigen-annotated",
    "toxigen_demonstrations": "toxigen-demonstrations-prompts",
    "implicit_hate": "implicit-hate-latent-hatred",
    "stormfront": "stormfront-hate-speech",
    "templates": "conversationai-sentence-templates-wiki-toxicity",
    "wiki_talk": "conversationai-sentence-templates-wiki-toxicity",
    "simple_wikipedia": "d-wikipedia-simple-articles",
    "jigsaw_sample": "jigsaw-toxic-comments-sample",
    "contrast": None,  # generated, needs no folder
    "functional": None,  # generated, needs no folder
}


def load_all(root: Path, limits: dict[str, int | None] | None = None, seed: int = 0,
             names: list[str] | None = None, skip_missing: bool = True) -> dict[str, list[LabelledText]]:
    """Load the named corpora (default: all training corpora), subsampled to ``limits``.

    A corpus whose whole folder is absent is skipped with a warning (``skip_missing``), so a
    partial copy of the data still builds; a folder that is present but malformed raises
    :class:`DataError`. No corpus at all is an error.
    """
    import logging

    from simplesafe.errors import ConfigError

    limits = limits or {}
    names = names or [n for n in LOADERS if n != "jigsaw_sample"]
    out = {}
    for name in names:
        if name not in LOADERS:
            raise ConfigError(f"unknown safety corpus '{name}'; allowed: {', '.join(LOADERS)}")
        if skip_missing and CORPUS_DIRS[name] and not (Path(root) / CORPUS_DIRS[name]).is_dir():
            msg = f"safety corpus '{name}' skipped: {Path(root) / CORPUS_DIRS[name]} does not exist"
            logging.getLogger(__name__).warning(msg)
            print(f"warning: {msg}", flush=True)
            continue
        rows = LOADERS[name](Path(root))
        out[name] = subsample(rows, limits.get(name), seed, by_group=(name == "templates"))
    if not out:
        raise DataError(root, None, None, f"none of the safety corpora ({', '.join(names)}) is present; "
                                          f"expected folders such as {', '.join(sorted({d for d in CORPUS_DIRS.values() if d}))}")
    return out

