"""NLP data: IOB/CoNLL and JSONL importers, bad input, de-identification of note files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from medml import lifecycle
from medml.data.dataset import load_manifest, load_meta
from medml.errors import BadInputError
from medml.settings import Settings
from medml.tasks.nlp.deid import deidentify_doc
from medml.tasks.nlp.documents import Doc, read_doc, tokenize
from medml.tasks.nlp.generate import generate_notes
from medml.tasks.nlp.importers import import_conll, import_iob2, import_jsonl, parse_conll

CONLL = ("Patient\tO\nhas\tO\ntype\tB-Disease\n2\tI-Disease\ndiabetes\tI-Disease\n,\tO\n"
         "takes\tO\nmetformin\tB-Drug\n.\tO\n\n"
         "No\tO\nasthma\tB-Disease\n.\tO\n")
JSONL = [
    {"text": "Patient has type 2 diabetes , takes metformin .",
     "entities": [{"start": 12, "end": 27, "label": "Disease"},
                  {"start": 36, "end": 45, "label": "Drug"}]},
    {"text": "No asthma .", "entities": [{"start": 3, "end": 9, "label": "Disease"}]},
]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


def _docs(out: Path, manifest: pd.DataFrame) -> list[Doc]:
    return [read_doc(out / p) for p in manifest["path"]]


def test_conll_and_jsonl_give_the_same_documents_and_manifest(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text(CONLL, encoding="utf-8")
    m1, meta1 = import_conll(tmp_path / "a.tsv", tmp_path / "o1", "a")
    m2, meta2 = import_jsonl(_write_jsonl(tmp_path / "b.jsonl", JSONL), tmp_path / "o2", "b")
    d1, d2 = _docs(tmp_path / "o1", m1), _docs(tmp_path / "o2", m2)
    assert [d.text for d in d1] == [r["text"] for r in JSONL]
    assert [d.entities for d in d1] == [d.entities for d in d2]
    assert [d.tags() for d in d1] == [d.tags() for d in d2]
    assert d1[0].tags()[2:5] == ["B-Disease", "I-Disease", "I-Disease"]
    cols = ["label", "n_chars", "n_tokens", "n_entities", "entity_types", "encoding",
            "tags_valid", "content_hash"]
    pd.testing.assert_frame_equal(m1[cols], m2[cols])  # same files, byte for byte
    assert meta1.classes == [] and meta1.extra["entity_types"] == ["Disease", "Drug"]
    assert list(m1["label"]) == ["Disease+Drug", "Disease"]
    for doc, rec in zip(d2, JSONL, strict=True):  # character offsets round-trip
        assert [doc.text[s:e] for s, e, _ in doc.entities] == [
            rec["text"][e["start"]:e["end"]] for e in rec["entities"]]


def test_jsonl_offsets_round_trip_with_non_ascii_and_mid_word_entities(tmp_path: Path) -> None:
    text = "Café patient with prediabetes\u00a0and  Sjögren's syndrome; on 5mg ASA."
    ents = [{"start": text.index("diabetes"), "end": text.index("diabetes") + 8,
             "label": "Disease"},
            {"start": text.index("Sjögren"), "end": text.index("syndrome") + 8,
             "label": "Disease"},
            {"start": text.index("ASA"), "end": text.index("ASA") + 3, "label": "Drug"}]
    rec = {"text": text, "entities": ents, "patient_id": "P1", "id": "n1",
           "document_id": "D9"}
    m, meta = import_jsonl(_write_jsonl(tmp_path / "n.jsonl", [rec]), tmp_path / "o", "n")
    doc = read_doc(tmp_path / "o" / m.loc[0, "path"])
    assert doc.text == text
    assert [(s, e, lab) for s, e, lab in doc.entities] == [
        (x["start"], x["end"], x["label"]) for x in ents]
    assert "diabetes" in doc.words  # the token was cut at the entity boundary
    assert m.loc[0, "patient_id"] == "P1" and m.loc[0, "document_id"] == "D9"
    assert meta.patient_level_split is True
    assert m.loc[0, "n_chars"] == len(text) and bool(m.loc[0, "tags_valid"])


def test_iob1_is_read_and_stored_as_iob2(tmp_path: Path) -> None:
    iob1 = "a\tI-Disease\nb\tI-Disease\nc\tB-Disease\nd\tO\ne\tI-Drug\n"
    (tmp_path / "x.iob").write_text(iob1, encoding="utf-8")
    [(doc, line, _)] = parse_conll(tmp_path / "x.iob")
    assert line == 1
    assert doc.tags() == ["B-Disease", "I-Disease", "B-Disease", "O", "B-Drug"]
    assert [(doc.text[s:e], lab) for s, e, lab in doc.entities] == [
        ("a b", "Disease"), ("c", "Disease"), ("e", "Drug")]


def test_folder_keeps_the_source_splits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("train.tsv", "devel.tsv", "test.tsv"):
        (src / name).write_text(CONLL, encoding="utf-8")
    m, meta = import_conll(src, tmp_path / "o", "s")
    assert sorted(m["split"].unique()) == ["test", "train", "val"]
    assert (m["split"] == "val").sum() == 2 and meta.patient_level_split is False
    assert m["source_file"].tolist().count("devel.tsv") == 2


@pytest.mark.parametrize("content, line, fix", [
    (b"", 1, "empty"),
    (b"a\tO\nb\tO\n\nc\tO\nd\xe9\tO\n", 5, "UTF-8"),
    (b"a\tO\nb\tB-Disease\nc\tO\nd\tI-Disease\n", 4, "B-Disease"),
    (b"a\tO\nb\tB-Disease\n\nlonely\n", 4, "token<TAB>tag"),
    (b"a\tO\nb\tX-Disease\n", 2, "IOB"),
])
def test_bad_iob_input_names_file_and_line(tmp_path: Path, content: bytes, line: int,
                                           fix: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        import_iob2(path, tmp_path / "o", "bad")
    msg = str(err.value)
    assert f"bad.tsv:{line}:" in msg and fix in msg and "\n" not in msg, msg


def test_i_tag_after_o_is_accepted_as_iob1_but_not_in_strict_iob2(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("a\tO\nb\tI-Disease\n", encoding="utf-8")
    m, meta = import_conll(path, tmp_path / "o", "t")
    assert read_doc(tmp_path / "o" / m.loc[0, "path"]).tags() == ["O", "B-Disease"]
    with pytest.raises(BadInputError, match=r"t\.tsv:2: .*strict IOB2"):
        import_iob2(path, tmp_path / "o2", "t")


@pytest.mark.parametrize("record, fix", [
    ({"text": "", "entities": []}, "empty"),
    ({"text": "abc", "entities": [{"start": 1, "end": 9, "label": "D"}]}, "outside the text"),
    ({"text": "ab cd", "entities": [{"start": 0, "end": 5, "label": "D"},
                                    {"start": 3, "end": 5, "label": "E"}]}, "overlap"),
])
def test_bad_jsonl_names_file_and_line(tmp_path: Path, record: dict, fix: str) -> None:
    path = _write_jsonl(tmp_path / "n.jsonl", [JSONL[1], record])
    with pytest.raises(BadInputError, match=rf"n\.jsonl:2: .*{fix}"):
        import_jsonl(path, tmp_path / "o", "n")


@pytest.mark.parametrize("text, entity, expected", [
    # an eponym found as a name (the name appears after a title): the entity keeps its
    # place and type, its text now holds the placeholder
    ("Dr. Smith diagnosed Smith disease in 2020; started aspirin.", "Smith disease",
     "[NAME] disease"),
    # an entity boundary inside an identifier snaps outward to the placeholder's edge
    ("Admitted with fever since 03/14/2021 and rash; started aspirin.", "fever since 03/14",
     "fever since [DATE]"),
])
def test_deid_keeps_offsets_when_an_entity_touches_phi(text: str, entity: str,
                                                       expected: str) -> None:
    from medml.tasks.nlp.documents import split_at

    ents = [(text.index(entity), text.index(entity) + len(entity), "Disease"),
            (text.index("aspirin"), text.index("aspirin") + 7, "Drug")]
    cuts = {x for s, e, _ in ents for x in (s, e)}
    doc = Doc(text, ents, split_at(tokenize(text), cuts))
    new, spans, counts = deidentify_doc(doc)
    assert "Smith" not in new.text and "03/14/2021" not in new.text and spans
    assert counts["entities_adjusted"] == 1
    got = [(new.text[s:e], lab) for s, e, lab in new.entities]
    assert got == [(expected, "Disease"), ("aspirin", "Drug")]
    assert new.tags().count("B-Disease") == 1  # spans on token boundaries (raises otherwise)
    placeholder = expected.split("[")[1].split("]")[0]
    assert ["[", placeholder, "]"] == new.words[new.words.index(placeholder) - 1:][:3]


def _settings(tmp_path: Path) -> Settings:
    return Settings(workspace=tmp_path, home=tmp_path / "home")


def test_demo_notes_lose_every_planted_phi_string_and_keep_entities(tmp_path: Path) -> None:
    params = {"n_patients": 12}
    s = _settings(tmp_path)
    s.tasks["nlp"] = s.task("nlp").model_copy(update={"demo": params})
    lifecycle.materialise(s, "nlp", tmp_path / "raw", seed=3, stage="raw")
    lifecycle.deidentify(s, tmp_path / "raw", tmp_path / "clean")
    notes = {eid: (doc, planted) for eid, _, doc, planted in generate_notes(params, 3)}
    manifest = load_manifest(tmp_path / "clean")
    assert len(manifest) == len(notes) and load_meta(tmp_path / "clean").extra["deidentified"]
    checked = 0
    for _, row in manifest.iterrows():
        raw, planted = notes[row["id"]]
        path = tmp_path / "clean" / row["path"]
        clean = read_doc(path)
        assert planted
        for phi in planted:  # string by string
            assert phi not in clean.text, (row["id"], phi)
            assert phi not in row["text"]
            checked += 1
        assert clean.text == row["text"]
        assert [(raw.text[s:e], lab) for s, e, lab in raw.entities] == [
            (clean.text[s:e], lab) for s, e, lab in clean.entities]
        assert sum(t.startswith("B-") for t in clean.tags()) == len(raw.entities)
        assert row["tags_valid"]
        # files of the previous stage are hard links: never modified in place
        raw_file = tmp_path / "raw" / row["path"]
        assert read_doc(raw_file).text == raw.text
        assert os.stat(raw_file).st_ino != os.stat(path).st_ino
    assert checked > 5 * len(manifest)
    report = json.loads((tmp_path / "clean" / "deid_report.json").read_text())
    assert report["files"]["changed"] == len(manifest)
    assert {"NAME", "DATE", "MRN"} <= set(report["files"]["replaced"])
