"""De-identification: DICOM headers (basic profile, UID remapping) and clinical text (PHI ->
typed placeholders). Small files, nothing downloaded, seconds."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from medml.deid import (
    BASIC_PROFILE,
    UidMap,
    check_basic_profile,
    deidentify_dicom,
    deidentify_dicom_folder,
    deidentify_text,
    find_phi,
)
from medml.deid.dicom import profile_table
from medml.deid.text import TYPES
from medml.errors import BadInputError, MedMLError

# ---------------------------------------------------------------------------------------
# DICOM

TEST_FILES = ("CT_small.dcm", "MR_small.dcm")
# Identifying attributes these two files hold, so that the tag-by-tag check is not vacuous.
EXPECTED_IN = {
    "CT_small.dcm": {"PatientName", "PatientID", "InstitutionName", "StationName", "StudyDate",
                     "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                     "FrameOfReferenceUID", "MediaStorageSOPInstanceUID", "OtherPatientIDs"
                     "Sequence", "InstanceCreatorUID", "ContentDate", "StudyDescription"},
    "MR_small.dcm": {"PatientName", "PatientID", "InstitutionName", "StationName", "StudyDate",
                     "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                     "FrameOfReferenceUID", "OperatorsName", "DeviceSerialNumber",
                     "NameOfPhysiciansReadingStudy", "MediaStorageSOPInstanceUID"},
}


def _read(path: Path | str) -> Dataset:
    return pydicom.dcmread(path)


def _elements(ds: Dataset):
    """(keyword, element, path) for every element, file meta included, at any depth."""
    def walk(d, prefix):
        for e in d:
            here = f"{prefix}{e.keyword or e.tag}"
            yield e.keyword, e, here
            if e.VR == "SQ":
                for i, item in enumerate(e.value):
                    yield from walk(item, f"{here}[{i}].")
    if getattr(ds, "file_meta", None) is not None:
        yield from walk(ds.file_meta, "")
    yield from walk(ds, "")


def _text_values(ds: Dataset) -> set[str]:
    """The original non-trivial string values of identifying attributes (for 'not in report')."""
    out = set()
    for kw, e, _ in _elements(ds):
        if (kw in BASIC_PROFILE or e.VR == "PN") and e.VR != "SQ" and len(str(e.value)) > 3:
            out.add(str(e.value))
    return out


@pytest.fixture(scope="module")
def table():
    return profile_table()


@pytest.mark.parametrize("name", TEST_FILES)
def test_basic_profile_attributes_lose_their_original_values(name, tmp_path):
    path = get_testdata_file(name)
    original = _read(path)
    ds, report = deidentify_dicom(path, UidMap("test-salt"))
    ds.save_as(tmp_path / name)
    out = _read(tmp_path / name)  # what is on disk

    checked = set()
    for kw, elem, where in _elements(original):
        if kw not in BASIC_PROFILE or elem.VR == "SQ" or elem.value in (None, "", b""):
            continue
        checked.add(kw)
        parent = out.file_meta if elem.tag.group == 0x0002 else out
        # Nested ones (in sequences the profile removes here) are left to the check below.
        new = parent.get(elem.tag) if "[" not in where else None
        if new is None or str(new.value).strip() in ("", "None", "[]"):
            continue  # removed or emptied (X, Z)
        assert str(new.value) != str(elem.value), f"{where} ({BASIC_PROFILE[kw]}) kept its value"
    for kw, elem, _ in _elements(original):
        if kw in BASIC_PROFILE and elem.VR == "SQ" and len(elem.value):
            checked.add(kw)  # sequences: their items' attributes are checked above
    assert EXPECTED_IN[name] <= checked, EXPECTED_IN[name] - checked

    # Sequences the profile removes are gone; no private tag anywhere.
    assert "OtherPatientIDsSequence" not in out
    assert not [w for _, e, w in _elements(out) if e.tag.is_private]
    # File meta follows the new SOP Instance UID; the instance says how it was cleaned.
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID != original.SOPInstanceUID
    assert out.PatientIdentityRemoved == "YES"
    assert "Basic Profile" in out.DeidentificationMethod
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    # Kept: what describes the image, not the patient.
    assert out.Modality == original.Modality and out.SOPClassUID == original.SOPClassUID
    assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    # The library's own check agrees, and the report holds actions, never values.
    assert check_basic_profile(original, out) == []
    assert {c.action for c in report.changes} <= {"X", "Z", "D", "U", "C"}
    text = json.dumps(report.to_dict())
    assert "PatientName" in text and "SOPInstanceUID" in text
    for value in _text_values(original):
        assert value not in text


@pytest.mark.parametrize("name", TEST_FILES)
def test_pixel_data_unchanged(name, tmp_path):
    path = get_testdata_file(name)
    original = _read(path)
    ds, _ = deidentify_dicom(path, UidMap("test-salt"))
    ds.save_as(tmp_path / name)
    out = _read(tmp_path / name)
    assert out.PixelData == original.PixelData
    assert (out.pixel_array == original.pixel_array).all()
    for kw in ("Rows", "Columns", "BitsAllocated", "PixelRepresentation",
               "PhotometricInterpretation"):
        assert out.get(kw) == original.get(kw)


def _study_folder(root: Path) -> Path:
    """Two CT instances of one study and series (the second refers to the first), an MR of
    another study, and a file that is not DICOM."""
    src = root / "src"
    (src / "ct").mkdir(parents=True)
    (src / "mr").mkdir()
    ct1 = _read(get_testdata_file("CT_small.dcm"))
    ct2 = copy.deepcopy(ct1)
    ct2.SOPInstanceUID = ct1.SOPInstanceUID + ".2"
    ct2.file_meta.MediaStorageSOPInstanceUID = ct2.SOPInstanceUID
    ct2.InstanceNumber = 2
    ref = Dataset()
    ref.ReferencedSOPClassUID = ct1.SOPClassUID
    ref.ReferencedSOPInstanceUID = ct1.SOPInstanceUID
    ct2.ReferencedImageSequence = [ref]
    ct1.save_as(src / "ct" / "1.dcm")
    ct2.save_as(src / "ct" / "2.dcm")
    _read(get_testdata_file("MR_small.dcm")).save_as(src / "mr" / "1.dcm")
    (src / "notes.txt").write_text("not an image\n")
    return src


def test_uids_remapped_consistently_and_deterministically(tmp_path):
    src = _study_folder(tmp_path)
    before = {rel: _read(src / rel) for rel in ("ct/1.dcm", "ct/2.dcm", "mr/1.dcm")}
    result = deidentify_dicom_folder(src, tmp_path / "out", UidMap("secret"))
    after = {rel: _read(tmp_path / "out" / rel) for rel in before}
    ct1, ct2, mr = after["ct/1.dcm"], after["ct/2.dcm"], after["mr/1.dcm"]

    # One study, one series, one frame of reference: still shared, all new.
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert ct1[kw].value == ct2[kw].value != before["ct/1.dcm"][kw].value
        assert pydicom.uid.UID(ct1[kw].value).is_valid
        assert ct1[kw].value.startswith("2.25.")
    assert ct1.SOPInstanceUID != ct2.SOPInstanceUID
    # The reference from the second image still resolves to the first.
    assert ct2.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ct1.SOPInstanceUID
    assert ct2.ReferencedImageSequence[0].ReferencedSOPClassUID == ct1.SOPClassUID
    # Another study stays another study.
    assert mr.StudyInstanceUID != ct1.StudyInstanceUID

    # Same salt, another run: the same UIDs; another salt: other UIDs.
    deidentify_dicom_folder(src, tmp_path / "again", UidMap("secret"))
    deidentify_dicom_folder(src, tmp_path / "other", UidMap("another secret"))
    for rel in before:
        again, other = _read(tmp_path / "again" / rel), _read(tmp_path / "other" / rel)
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert again[kw].value == after[rel][kw].value
            assert other[kw].value != after[rel][kw].value
    mapper = UidMap("secret")
    assert mapper("1.2.3.4") == mapper("1.2.3.4") == UidMap("secret")("1.2.3.4")
    assert len(mapper) == 1

    # The report: every file, changes by keyword and action, no original value.
    assert result.skipped == ["notes.txt"]
    body = json.loads(result.report_path.read_text())
    assert result.report_path == tmp_path / "out" / "dicom_deid_report.json"
    assert [f["source"] for f in body["files"]] == ["ct/1.dcm", "ct/2.dcm", "mr/1.dcm"]
    assert ["StudyInstanceUID", "(0020,000D)", "U"] in body["files"][0]["changes"]
    assert body["counts"]["U"] >= 12
    raw = result.report_path.read_text()
    for ds in before.values():
        for value in _text_values(ds):
            assert value not in raw


def test_nested_sequences_and_private_tags_are_cleaned():
    ds = _read(get_testdata_file("MR_small.dcm"))
    series_uid = ds.SeriesInstanceUID
    item = Dataset()
    item.SeriesInstanceUID = series_uid
    item.PerformingPhysicianName = "Nested^Doctor"  # X in the table, at any depth
    item.add_new(0x00091001, "LO", "private payload")
    item.add_new(0x00081050, "PN", "Unlisted^Person")  # a PN the table lists: X
    ds.ReferencedSeriesSequence = [item]  # not in the table: kept, its items cleaned
    ds.add_new(0x00431001, "LO", "vendor private")
    step = Dataset()  # X/Z/D -> D: every item element replaced, its UIDs remapped
    step.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    step.ReferencedSOPInstanceUID = "1.2.3.4.6"
    step.PerformedProcedureStepID = "PPS77"
    ds.ReferencedPerformedProcedureStepSequence = [step]
    study = Dataset()
    study.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedStudySequence = [study]  # X/Z -> Z: emptied
    ds.add_new(0x60004000, "LT", "overlay comment by Smith")  # repeating group 60xx: X
    mapper = UidMap("k")
    out, report = deidentify_dicom(ds, mapper)
    nested = out.ReferencedSeriesSequence[0]
    assert nested.SeriesInstanceUID == out.SeriesInstanceUID == mapper(series_uid)
    assert "PerformingPhysicianName" not in nested
    assert 0x00091001 not in nested and 0x00431001 not in out
    done = out.ReferencedPerformedProcedureStepSequence[0]
    assert done.ReferencedSOPInstanceUID == mapper("1.2.3.4.6")
    assert done.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.3"  # a class UID: kept
    assert done.PerformedProcedureStepID != "PPS77"
    assert len(out.ReferencedStudySequence) == 0
    assert 0x60004000 not in out
    paths = {c.path for c in report.changes}
    assert "ReferencedSeriesSequence[0].SeriesInstanceUID" in paths
    assert "ReferencedSeriesSequence[0].(0009,1001)" in paths


def test_options_pseudonym_and_burned_in_annotation():
    ds = _read(get_testdata_file("CT_small.dcm"))
    ds.PatientAge = "095Y"
    ds.PatientSex = "F"
    ds.StudyDescription = "CT chest for John Smith, seen 03/14/2021"
    out, report = deidentify_dicom(ds, UidMap("k"), patient_pseudonym="P0007",
                                   retain_patient_characteristics=True,
                                   clean_descriptors=True)
    assert out.PatientID == "P0007" and str(out.PatientName) == "P0007"
    assert out.PatientSex == "F" and out.PatientAge == "090Y"  # Safe Harbor: 90 or older
    assert "PatientWeight" in out  # a patient characteristic: kept with the option
    assert out.StudyDescription.startswith("CT chest for")
    assert "John" not in out.StudyDescription and "03/14/2021" not in out.StudyDescription
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113108", "113105"]
    assert report.options == ["retain_patient_characteristics", "clean_descriptors"]

    burned = _read(get_testdata_file("MR_small.dcm"))
    burned.BurnedInAnnotation = "YES"
    with pytest.raises(BadInputError, match="BurnedInAnnotation"):
        deidentify_dicom(burned, UidMap("k"), source="scan.dcm")
    out, _ = deidentify_dicom(burned, UidMap("k"), allow_burned_in_annotation=True)
    assert out.PatientIdentityRemoved == "YES"


def test_bad_input_names_the_file(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"this is not DICOM")
    with pytest.raises(BadInputError, match="broken.dcm") as info:
        deidentify_dicom(bad, UidMap("k"))
    assert "\n" not in str(info.value)
    with pytest.raises(BadInputError, match="not a folder"):
        deidentify_dicom_folder(tmp_path / "missing", tmp_path / "out", UidMap("k"))
    with pytest.raises(BadInputError, match="outside"):
        deidentify_dicom_folder(tmp_path, tmp_path / "out", UidMap("k"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no DICOM files"):
        deidentify_dicom_folder(tmp_path / "empty", tmp_path / "o2", UidMap("k"))


def test_check_reports_leftovers_without_values():
    original = _read(get_testdata_file("MR_small.dcm"))
    untouched = copy.deepcopy(original)
    problems = check_basic_profile(original, untouched)
    joined = "\n".join(problems)
    for kw in ("PatientName", "PatientID", "StudyInstanceUID", "InstitutionName"):
        assert kw in joined
    assert "PatientIdentityRemoved" in joined
    assert str(original.PatientName) not in joined and original.PatientID not in joined


def test_missing_table_package_is_one_clear_error(monkeypatch):
    def no_module(name, *args):
        raise ImportError(f"No module named {name!r}")

    ds = _read(get_testdata_file("MR_small.dcm"))
    profile_table.cache_clear()
    monkeypatch.setattr("importlib.import_module", no_module)
    try:
        with pytest.raises(MedMLError, match="dicom-anonymizer==2.1.0"):
            deidentify_dicom(ds, UidMap("k"))
    finally:
        monkeypatch.undo()
        profile_table.cache_clear()


def test_curated_profile_agrees_with_the_full_table(table):
    exact, masked = table
    assert len(exact) > 600 and masked  # the whole Table E.1-1, with repeating groups
    for kw, action in BASIC_PROFILE.items():
        tag = pydicom.datadict.tag_for_keyword(kw)
        assert tag is not None, kw
        assert exact.get(tag) == action, (kw, action, exact.get(tag))


# ---------------------------------------------------------------------------------------
# Text

# Planted PHI, four patients; each template uses every field in its own formats.
PATIENTS = [
    {"first": "Eleanor", "last": "Whitfield", "dr_first": "Rajesh", "dr_last": "Patel",
     "rel": "Margaret Okafor", "rel_kind": "her daughter",
     "dob": "03/14/1931", "admit": "2024-02-11", "discharge": "February 19, 2024",
     "seen": "14 Mar 2024", "lab": "14-MAR-2024", "fu": "3/21/24",
     "phone": "(217) 555-0143", "phone2": "217.555.0188", "fax": "217-555-0199",
     "mrn": "00482913", "account": "ACC-7734-2291", "street": "1427 Maplewood Avenue",
     "unit": "Apt 3B", "city": "Springfield", "state": "IL", "zip": "62704",
     "email": "e.whitfield@example.com", "url": "https://portal.example.org/p/482913",
     "ssn": "123-45-6789", "ip": "192.168.14.27", "age": "92"},
    {"first": "Tobias", "last": "Quennell", "dr_first": "Ingrid", "dr_last": "Halvorsen",
     "rel": "Priya Quennell", "rel_kind": "his wife",
     "dob": "11-02-1930", "admit": "2023/07/04", "discharge": "Jul 9, 2023",
     "seen": "5th of July 2023", "lab": "05JUL2023", "fu": "07.30.2023",
     "phone": "+1 617 555 0101", "phone2": "617-555-0102", "fax": "(617) 555-0109",
     "mrn": "MR-5521907", "account": "9912004471", "street": "88 North Harbor Rd",
     "unit": "Suite 200", "city": "Salem", "state": "MA", "zip": "01970",
     "email": "tq1930@mail.example.net", "url": "www.quennell-family.example.com/photos",
     "ssn": "987-65-4321", "ip": "10.0.37.201", "age": "94"},
    {"first": "Kwame", "last": "Mensah-Boateng", "dr_first": "Siobhan", "dr_last": "O'Leary",
     "rel": "Dmitri Mensah-Boateng", "rel_kind": "her son",
     "dob": "1929-12-01", "admit": "Dec 3, 2022", "discharge": "12/09/2022",
     "seen": "December 5th", "lab": "20221205", "fu": "Jan 2023",
     "phone": "312-555-0177", "phone2": "(312) 555-0178", "fax": "312.555.0179",
     "mrn": "7734521", "account": "ACCT-004-88123", "street": "2200 W Lakeshore Drive",
     "unit": "Unit 14", "city": "Chicago", "state": "IL", "zip": "60614-2231",
     "email": "kmb@hospital.example.org", "url": "http://10.0.0.5/chart?id=7734521",
     "ssn": "555-12-3456", "ip": "fe80::1ff:fe23:4567:890a", "age": "101"},
    {"first": "Marie", "last": "Delacroix", "dr_first": "Hiroshi", "dr_last": "Tanaka",
     "rel": "Claude Delacroix", "rel_kind": "her brother",
     "dob": "7/4/1932", "admit": "2021-10-30", "discharge": "Nov. 2, 2021",
     "seen": "October 31, 2021", "lab": "31-Oct-2021", "fu": "11/16/21",
     "phone": "206 555 0123", "phone2": "206-555-0124", "fax": "206-555-0125 ext. 12",
     "mrn": "A99812", "account": "ACC99331", "street": "501 Pine St",
     "unit": "#12", "city": "Seattle", "state": "WA", "zip": "98101",
     "email": "marie.delacroix@example.org", "url": "https://example.org/~mdelacroix",
     "ssn": "321-54-9876", "ip": "172.16.254.1", "age": "90"},
]

TEMPLATES = [
    """DISCHARGE SUMMARY
Patient: {first} {last}    MRN: {mrn}    Account #: {account}
DOB: {dob}    Admitted: {admit}    Discharged: {discharge}
Address: {street}, {unit}, {city}, {state} {zip}
Phone: {phone}    Fax: {fax}    Email: {email}
SSN: {ssn}

HPI: {last} is a {age}-year-old with type 2 diabetes mellitus and hypertension admitted with
community-acquired pneumonia. Seen by Dr. {dr_last} on {seen}. Chest CT on {lab}.
Vitals: BP 120/80, HR 72, RR 16, Temp 37.2 C, SpO2 96% on room air.
Medications: metformin 500 mg twice daily, lisinopril 5 mg daily, amoxicillin 875 mg BID.
Plan: {rel_kind} {rel} (cell {phone2}) will take the patient home. Follow-up on {fu}.
Results portal: {url} (logged from workstation {ip}).
Electronically signed by {dr_first} {dr_last}, MD
""",
    """Progress note, {seen}.
Name: {last}, {first}
Medical record number: {mrn}; acct no. {account}; date of birth {dob}.
{first} {last}, age {age}, lives at {street} {unit}, {city}, {state} {zip}, with {rel_kind}
{rel}. Contact phone {phone}, fax number {fax}, e-mail {email}.
Social security number: {ssn}. Patient portal {url}; device IP address {ip}.
Assessment: hypertension, well controlled on lisinopril 5 mg daily; type 2 diabetes with
A1c 7.9%, continue metformin 500 mg BID. BP 120/80, HR 72.
Admitted {admit}, discharged {discharge}; labs drawn {lab}; return visit {fu}.
Callback {phone2}.
Seen by {dr_first} {dr_last}, MD.
""",
]

CLINICAL = ["type 2 diabetes", "hypertension", "metformin 500 mg", "lisinopril 5 mg",
            "BP 120/80", "HR 72"]


def _planted(p: dict) -> list[str]:
    """Every PHI string planted in a note (names word by word)."""
    names = {p["first"], p["last"], p["dr_first"], p["dr_last"], *p["rel"].split()}
    return sorted(names) + [p[k] for k in (
        "dob", "admit", "discharge", "seen", "lab", "fu", "phone", "phone2", "fax", "mrn",
        "account", "street", "city", "zip", "email", "url", "ssn", "ip")] + [
        f"{p['age']}-year-old", f"age {p['age']}"]


@pytest.mark.parametrize("template", range(len(TEMPLATES)))
@pytest.mark.parametrize("patient", range(len(PATIENTS)))
def test_planted_phi_removed_and_clinical_content_kept(patient, template):
    p = PATIENTS[patient]
    note = TEMPLATES[template].format(**p)
    clean, spans = deidentify_text(note)
    for phi in _planted(p):
        if phi in note:
            assert phi not in clean, f"planted PHI left: {phi!r}\n{clean}"
    assert f"{p['state']} {p['zip']}" not in clean
    for keep in CLINICAL:
        assert keep in clean, f"clinical content lost: {keep!r}\n{clean}"
    # Spans: in order, non-overlapping, placeholders of known types, rebuild the output.
    rebuilt, pos = [], 0
    for s in spans:
        assert s.type in TYPES and s.replacement == f"[{s.type}]"
        assert s.start >= pos and s.length == s.end - s.start > 0
        rebuilt += [note[pos:s.start], s.replacement]
        pos = s.end
    assert "".join([*rebuilt, note[pos:]]) == clean
    # The change list never holds the original strings.
    report = json.dumps([s.to_dict() for s in spans])
    for phi in _planted(p):
        assert phi not in report


def test_placeholders_are_typed():
    p = PATIENTS[0]
    clean, spans = deidentify_text(TEMPLATES[0].format(**p))
    for placeholder in ("[NAME]", "[DATE]", "[PHONE]", "[FAX]", "[MRN]", "[ACCOUNT]",
                        "[ADDRESS]", "[EMAIL]", "[URL]", "[SSN]", "[IP]", "[AGE]"):
        assert placeholder in clean, placeholder
    assert "Patient: [NAME]" in clean and "MRN: [MRN]" in clean and "Fax: [FAX]" in clean
    assert "Dr. [NAME]" in clean and "a [AGE]-year-old" in clean
    more = ("Member ID: XJH449021337. Pacemaker serial number: PM884213. "
            "VIN 1HGCM82633A004352. DEA# AB1234563. Lives in Rockford. Zip code: 61101.")
    clean, _ = deidentify_text(more)
    assert clean == ("Member ID: [HEALTH_PLAN]. Pacemaker serial number: [DEVICE]. "
                     "VIN [VEHICLE]. DEA# [LICENSE]. Lives in [LOCATION]. Zip code: [ZIP].")


def test_deterministic_idempotent_and_salted():
    note = TEMPLATES[1].format(**PATIENTS[2])
    first, spans = deidentify_text(note)
    assert deidentify_text(note) == (first, spans)
    assert find_phi(first) == []  # placeholders are not taken for PHI again
    for text in ("Address: 12 Main Street, Springfield, IL 62704. Seen by Dr. Smith.",
                 "Home address: 99 Oak Ave Apt 3, Denver, CO 80202"):
        once, _ = deidentify_text(text)
        assert "[ADDRESS]" in once and find_phi(once) == [], once  # "Address: [ADDRESS]"
    assert all(s.digest is None for s in spans)
    a = [s.digest for s in deidentify_text(note, salt="k1")[1]]
    b = [s.digest for s in deidentify_text(note, salt="k1")[1]]
    c = [s.digest for s in deidentify_text(note, salt="k2")[1]]
    assert a == b and a != c and all(d and len(d) == 16 for d in a)


def test_clinical_text_without_phi_is_unchanged():
    text = (
        "Assessment and Plan:\n"
        "1. Community-acquired pneumonia: ceftriaxone 1 g IV q24h and azithromycin 500 mg PO "
        "daily x 5 days.\n"
        "2. Type 2 Diabetes Mellitus: HbA1c 8.2%. Metformin 1000 mg BID. Glargine 20 units qHS.\n"
        "3. Hypertension: BP 142/88, HR 88, RR 18, Temp 38.1 C, SpO2 93% on 2 L NC.\n"
        "Labs: WBC 14.2, Hgb 11.3, Plt 250000, Na 138, K 4.1, Cr 1.2, glucose 245 mg/dL.\n"
        "CT chest shows RLL consolidation. ECG: NSR. EF 55-60%. Pain 5/10. GCS 15.\n"
        "Parkinson Disease, Crohn Disease, Bell's palsy, BRCA1 negative, COVID-19 negative.\n"
        "May continue home meds. Follow up with Cardiology in 2-4 weeks. Return in March.\n"
        "The patient is a 67-year-old man. Penicillin G 2400000 units IM once. ICD-10 E11.9.\n"
        "Drug name: Lisinopril. CC: chest pain. In this case 15 mg of prednisone was used.\n")
    clean, spans = deidentify_text(text)
    assert spans == [] and clean == text


def test_speech_transcript_same_function():
    transcript = ("this is doctor smith dictating for patient john doe date of birth march "
                  "third nineteen thirty one the patient is a ninety two year old with copd "
                  "on albuterol two puffs twice daily")
    clean, spans = deidentify_text(transcript)
    for phi in ("smith", "john", "doe", "march third", "ninety two"):
        assert phi not in clean
    assert "copd on albuterol two puffs twice daily" in clean
    assert {s.type for s in spans} == {"NAME", "DATE", "AGE"}


def test_text_bad_input():
    with pytest.raises(BadInputError, match="notes.jsonl:3"):
        deidentify_text(b"bytes", source="notes.jsonl:3")  # type: ignore[arg-type]
    assert deidentify_text("") == ("", [])


# ---------------------------------------------------------------------------------------
# The stages together: a DICOM folder de-identified, imported, de-identified as a dataset


def test_dicom_folder_to_dataset_keeps_no_identifier(settings, tmp_path: Path) -> None:
    from medml import lifecycle
    from medml.data.dataset import load_manifest

    src = tmp_path / "raw"
    originals: set[str] = set()
    for cls, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm")):
        (src / cls).mkdir(parents=True)
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.save_as(src / cls / name)
        originals |= {str(ds.get(k)) for k in ("PatientName", "PatientID", "InstitutionName",
                                                 "StudyInstanceUID", "SOPInstanceUID",
                                                 "StationName") if ds.get(k)}
    clean = tmp_path / "clean"
    assert lifecycle.deidentify(settings, src, clean) == 2
    ct = pydicom.dcmread(clean / "ct" / "CT_small.dcm")
    assert str(ct.PatientID).startswith("pt-") and ct.PatientIdentityRemoved == "YES"
    v = lifecycle.create_dataset(settings, "imaging", "scans", fmt="dicom", src=clean)
    assert v.name == "scans"
    manifest = load_manifest(settings.data_dir / "scans")
    cells = {str(v) for v in manifest.to_numpy().ravel()}
    report = (settings.data_dir / "scans" / "deid_report.json").read_text()
    assert not originals & cells and not {o for o in originals if o in report}
    assert manifest["patient_id"].str.fullmatch(r"pt-[0-9a-f]{12}").all()
    # the same key maps a UID alike in files and manifests: the study survives both steps
    from medml.deid.manifest import load_key, remap_uid

    key = load_key(None, settings.state_dir)
    row = manifest.set_index("label").loc["ct"]
    assert row["study_uid"] == remap_uid(key, str(ct.StudyInstanceUID))
