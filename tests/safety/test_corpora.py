"""Corpus loaders: label mapping on small hand-made files, and on the real files in ../shared/data."""

import csv
import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from simplesafe.errors import DataError
from simplesafe.safety import corpora as C


def test_strip_bytes_literal():
    assert C.strip_bytes_literal("b'muslims are here'") == "muslims are here"
    assert C.strip_bytes_literal('b"it\'s fine"') == "it's fine"
    assert C.strip_bytes_literal("b'caf\\xc3\\xa9'") == "café"
    assert C.strip_bytes_literal("plain text") == "plain text"


def test_clean_text_drops_artefacts():
    assert C.clean_text('  "" : rt  some   post " " " ') == ": rt some post"
    assert C.clean_text("line one NEWLINE_TOKEN line two") == "line one line two"


def _write_csv(path: Path, header, rows, delimiter=","):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)


def test_toxigen_annotated_thresholds_and_drops_the_middle(tmp_path):
    _write_csv(tmp_path / "toxigen-annotated" / "toxigen.csv", ["text", "toxicity_human", "label"], [
        ["b'they are all lazy'", "4.0", "hate"], ["b'nice people'", "1.33", "hate"],
        ["b'unclear'", "3.0", "neutral"], ["b'border'", "2.0", "neutral"], ["b'very bad'", "5", "neutral"]])
    rows = C.load_toxigen_annotated(tmp_path)
    assert [(r.text, r.label) for r in rows] == [("they are all lazy", 1), ("nice people", 0), ("border", 0),
                                                 ("very bad", 1)]


def test_toxigen_annotated_bad_rating_names_file_line_field(tmp_path):
    _write_csv(tmp_path / "toxigen-annotated" / "toxigen.csv", ["text", "toxicity_human"],
               [["b'a'", "1"], ["b'b'", "high"]])
    with pytest.raises(DataError) as err:
        C.load_toxigen_annotated(tmp_path)
    assert err.value.line == 3 and err.value.field == "toxicity_human" and "toxigen.csv" in str(err.value)


def test_implicit_hate_maps_implicit_and_explicit_to_hateful(tmp_path):
    path = tmp_path / "implicit-hate-latent-hatred" / "implicit_hate_v1_stg1_posts.tsv"
    _write_csv(path, ["post", "class"], [["a", "implicit_hate"], ["b", "explicit_hate"], ["c", "not_hate"]], "\t")
    assert [r.label for r in C.load_implicit_hate(tmp_path)] == [1, 1, 0]
    _write_csv(path, ["post", "class"], [["a", "maybe"]], "\t")
    with pytest.raises(DataError, match="class"):
        C.load_implicit_hate(tmp_path)


def test_stormfront_reads_tar_and_drops_relation_and_skip(tmp_path):
    base = tmp_path / "stormfront-hate-speech"
    _write_csv(base / "annotations_metadata.csv", ["file_id", "user_id", "subforum_id", "num_contexts", "label"], [
        ["100_1", "1", "1", "0", "hate"], ["100_2", "1", "1", "0", "noHate"],
        ["200_1", "2", "1", "1", "relation"], ["300_1", "3", "1", "0", "idk/skip"]])
    with tarfile.open(base / "stormfront_sentences.tar.gz", "w:gz") as tar:
        for fid, text in [("100_1", "hateful sentence\n"), ("100_2", "ordinary sentence\n"),
                          ("200_1", "x"), ("300_1", "y")]:
            data = text.encode()
            info = tarfile.TarInfo(f"all_files/{fid}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = C.load_stormfront(tmp_path)
    assert [(r.text, r.label, r.group) for r in rows] == [("hateful sentence", 1, "sf:100"),
                                                          ("ordinary sentence", 0, "sf:100")]


def test_subsample_is_seeded_stratified_and_spreads_over_groups():
    rows = [C.LabelledText(f"t{i}", i % 2, "templates", f"{i:05d}", "template:big") for i in range(1000)]
    rows += [C.LabelledText(f"s{i}", i % 2, "templates", f"s{i:04d}", "template:small") for i in range(20)]
    a = C.subsample(rows, 100, seed=0, by_group=True)
    assert len(a) == 100 and a == C.subsample(rows, 100, seed=0, by_group=True)
    assert Counter(r.group for r in a)["template:small"] == 20      # small group kept whole
    assert Counter(r.label for r in a) == {0: 50, 1: 50}
    assert C.subsample(rows, 100, seed=1, by_group=True) != a


# ---------------------------------------------------------------- the real files (small checks)

def test_real_toxigen_counts_match_source_md(shared_data):
    rows = C.load_toxigen_annotated(shared_data)
    assert Counter(r.label for r in rows) == {0: 4702, 1: 2307}
    assert not any(r.text.startswith(("b'", 'b"')) for r in rows)


def test_real_toxigen_demonstrations_include_prompt_sentences(shared_data):
    rows = C.load_toxigen_demonstrations(shared_data)
    texts = {r.text: r.label for r in rows}
    assert texts["women should all stay in the kitchen or in the home"] == 1   # only in prompts/ (no women demo file)
    assert len(texts) == len(rows) and not any("\\n" in t for t in texts)
    assert {r.label for r in rows} == {0, 1}


def test_real_implicit_hate_and_stormfront_labels(shared_data):
    ih = Counter(r.label for r in C.load_implicit_hate(shared_data))
    assert ih == {0: 13291, 1: 7100 + 1089}
    sf = Counter(r.label for r in C.load_stormfront(shared_data))
    assert sf[1] == 1196 and 9400 < sf[0] <= 9507


def test_real_templates_and_wiki_talk(shared_data):
    tpl = C.load_sentence_templates(shared_data)
    lab = {r.text: r.label for r in tpl}
    assert lab["I hate lesbian"] == 1 and lab["I am lesbian"] == 0
    assert {r.group for r in tpl} == {f"template:{t}" for t in
                                      ("name_adj", "being_adj", "you_are_adj", "you_occupation", "verb_adj", "am_hate_adj")}
    wiki = C.load_wiki_talk(shared_data)
    assert len(wiki) == 1492 and sum(r.label for r in wiki) == 248
    assert not any("NEWLINE_TOKEN" in r.text for r in wiki)


def test_real_jigsaw_sample_any_label_is_toxic(shared_data):
    rows = C.load_jigsaw_sample(shared_data)
    assert len(rows) == 101 and sum(r.label for r in rows) >= 13


def test_load_all_skips_absent_folders_and_fails_when_none_present(tmp_path, capsys):
    path = tmp_path / "implicit-hate-latent-hatred" / "implicit_hate_v1_stg1_posts.tsv"
    _write_csv(path, ["post", "class"], [["a b c", "implicit_hate"], ["d e f", "not_hate"]], "\t")
    out = C.load_all(tmp_path, names=["implicit_hate", "stormfront"])
    assert list(out) == ["implicit_hate"] and len(out["implicit_hate"]) == 2
    assert "stormfront" in capsys.readouterr().out
    with pytest.raises(DataError, match="none of the safety corpora"):
        C.load_all(tmp_path / "empty", names=["stormfront"])
    from simplesafe.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown safety corpus"):
        C.load_all(tmp_path, names=["reddit"])
