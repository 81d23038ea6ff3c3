"""De-identify DICOM headers with the Basic Application Level Confidentiality Profile.

DICOM PS3.15 Annex E, Table E.1-1, gives every attribute that can identify a patient an
action: X remove, Z empty, D replace with a dummy value, U replace a UID with a new one
that is the same for the same old UID, or a choice among them (Z/D, X/Z, X/D, X/Z/D,
X/Z/U* for sequences of references). The table (about 650 attributes) is taken from
``dicom-anonymizer`` (Kitware, BSD), which ships it version by version
(``TABLE_VERSION``); pydicom ships none. The actions are carried out here, not by that
package, so that they apply at every nesting level, UIDs are remapped deterministically,
and every change is reported. A combined action keeps the attribute present where it may
be required (Type 1 or 2) in the instance's IOD: Z/D, X/D and X/Z/D -> D, X/Z -> Z,
X/Z/U* -> the sequence is kept and its items cleaned (their instance UIDs remapped).

Beyond the table, and whatever the options: private tags are removed (the profile's
default; no Retain Safe Private option), a person name (VR PN) the table does not list is
emptied, an instance UID the table does not list is remapped (class, transfer syntax and
DICOM-defined UIDs are kept), the file meta's application entity titles are removed, and
PatientIdentityRemoved=YES, DeidentificationMethod(+CodeSequence) and
LongitudinalTemporalInformationModified=REMOVED are set. An instance flagged
BurnedInAnnotation=YES is refused unless allowed: header cleaning does not clean pixels.

UIDs: ``UidMap(salt)`` maps each old UID to ``2.25.<128 bits of HMAC-SHA256(salt, uid)>``
(PS3.5 B.2), so a study's instances keep their shared Study, Series and Frame of Reference
UIDs and their references to one another, the same input gives the same output in any
run with the same secret salt, and without the salt the old UIDs cannot be recovered.

Options of Annex E that the project uses: Retain Patient Characteristics (sex, age, size,
weight... kept for subgroup metrics; an age over 89 becomes 090Y, as Safe Harbor asks)
and Clean Descriptors (study and series descriptions... kept, run through the text
de-identifier instead of removed).

Every result is checked before it is returned (``check_basic_profile``): no attribute of
``BASIC_PROFILE`` (the commonly seen part of the table, written out here independently of
the package), no person name, no instance UID and no private tag may still hold its
original value. Reports name attributes and actions, never values.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import importlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medml.errors import BadInputError, CheckFailed, MedMLError

if TYPE_CHECKING:
    from pydicom import Dataset
    from pydicom.dataelem import DataElement

log = logging.getLogger("medml.deid.dicom")

TABLE_PACKAGE = "dicom-anonymizer==2.1.0"
TABLE_VERSION = "dicomfields_2026c"  # Table E.1-1 as of DICOM 2026c
REPORT_FILE = "dicom_deid_report.json"  # beside, not over, medml.deid.manifest's
METHOD = "DICOM PS3.15 E.1 Basic Profile (MedML)"

# Table E.1-1, Basic Profile column, for the attributes commonly found in imaging headers
# (keyword -> action). Used to check every result, independently of the full table.
BASIC_PROFILE: dict[str, str] = {
    # Patient
    "PatientName": "Z", "PatientID": "Z/D", "IssuerOfPatientID": "X",
    "PatientBirthDate": "Z", "PatientBirthTime": "X", "PatientSex": "Z", "PatientAge": "X",
    "PatientSize": "X", "PatientWeight": "X", "PatientAddress": "X", "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X", "OtherPatientNames": "X", "PatientBirthName": "X",
    "PatientMotherBirthName": "X", "PatientTelephoneNumbers": "X",
    "PatientTelecomInformation": "X", "MedicalRecordLocator": "X", "EthnicGroup": "X",
    "Occupation": "X", "MilitaryRank": "X", "BranchOfService": "X", "CountryOfResidence": "X",
    "RegionOfResidence": "X", "PatientReligiousPreference": "X", "PatientComments": "X",
    "AdditionalPatientHistory": "X", "PatientInsurancePlanCodeSequence": "X",
    "PatientPrimaryLanguageCodeSequence": "X", "MedicalAlerts": "X", "Allergies": "X",
    "SmokingStatus": "X", "PregnancyStatus": "X", "LastMenstrualDate": "X", "SpecialNeeds": "X",
    "PatientState": "X", "PatientSexNeutered": "X/Z", "ReferencedPatientSequence": "X",
    "ReferencedPatientPhotoSequence": "X", "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X", "PatientInstitutionResidence": "X",
    "CurrentPatientLocation": "X", "AdmissionID": "X", "AdmittingDiagnosesDescription": "X",
    "AdmittingDate": "X", "AdmittingTime": "X",
    # Study and request
    "StudyInstanceUID": "U", "StudyDate": "Z", "StudyTime": "Z", "AccessionNumber": "Z",
    "StudyID": "Z", "StudyDescription": "X", "StudyComments": "X",
    "ReferringPhysicianName": "Z", "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X", "ReferringPhysicianIdentificationSequence": "X",
    "ConsultingPhysicianName": "Z", "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X", "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X", "RequestingPhysician": "X",
    "RequestingService": "X", "ReasonForStudy": "X", "RequestedProcedureDescription": "X/Z",
    "RequestedProcedureID": "X", "RequestAttributesSequence": "X",
    "ReferencedStudySequence": "X/Z", "PlacerOrderNumberImagingServiceRequest": "Z",
    "FillerOrderNumberImagingServiceRequest": "Z", "ReasonForTheRequestedProcedure": "X",
    "ImagingServiceRequestComments": "X", "RequestedProcedureComments": "X",
    "IssueDateOfImagingServiceRequest": "X", "OrderEnteredBy": "X",
    "OrderEntererLocation": "X", "OrderCallbackPhoneNumber": "X", "ServiceEpisodeID": "X",
    "VisitComments": "X", "ReasonForVisit": "X", "ScheduledStudyLocation": "X",
    "StudyArrivalDate": "X", "StudyCompletionDate": "X", "StudyReadDate": "X",
    "StudyVerifiedDate": "X", "InterpretationAuthor": "X",
    # Series and procedure step
    "SeriesInstanceUID": "U", "SeriesDate": "X/D", "SeriesTime": "X/D",
    "SeriesDescription": "X", "OperatorsName": "X/Z/D", "OperatorIdentificationSequence": "X/D",
    "PerformingPhysicianName": "X", "PerformingPhysicianIdentificationSequence": "X",
    "ProtocolName": "X/D", "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X", "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepEndTime": "X", "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X", "PerformedLocation": "X",
    "PerformedStationAETitle": "X", "PerformedStationName": "X",
    "CommentsOnThePerformedProcedureStep": "X",
    "ReferencedPerformedProcedureStepSequence": "X/Z/D",
    "ScheduledProcedureStepDescription": "X", "ScheduledProcedureStepID": "X",
    "ScheduledPerformingPhysicianName": "X", "ScheduledProcedureStepStartDate": "X",
    "ScheduledProcedureStepLocation": "X", "HumanPerformerName": "X",
    "ActualHumanPerformersSequence": "X",
    # Equipment and institution
    "InstitutionName": "X/Z/D", "InstitutionAddress": "X", "InstitutionCodeSequence": "X/Z/D",
    "InstitutionalDepartmentName": "X", "StationName": "X/Z/D", "StationAETitle": "X",
    "DeviceSerialNumber": "X/Z/D", "DeviceUID": "U", "DeviceDescription": "X",
    "UniqueDeviceIdentifier": "X", "UDISequence": "X", "PlateID": "X", "GantryID": "X",
    "DetectorID": "X/D", "GeneratorID": "X", "CassetteID": "X", "DateOfLastCalibration": "X",
    "TimeOfLastCalibration": "X", "DateOfLastDetectorCalibration": "X/D",
    "TimeOfLastDetectorCalibration": "X/D", "SecondaryCaptureDeviceID": "X",
    "DateOfSecondaryCapture": "X", "TimeOfSecondaryCapture": "X",
    "SourceSerialNumber": "X/Z", "TreatmentMachineName": "X/Z",
    # Image / instance
    "SOPInstanceUID": "U", "MediaStorageSOPInstanceUID": "U", "InstanceCreatorUID": "U",
    "FrameOfReferenceUID": "U", "SynchronizationFrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U", "ReferencedFrameOfReferenceUID": "U",
    "IrradiationEventUID": "U", "ConcatenationUID": "U", "DimensionOrganizationUID": "U",
    "StorageMediaFileSetUID": "U", "TransactionUID": "U", "TrackingUID": "U", "UID": "U",
    "ContentDate": "Z/D", "ContentTime": "Z/D", "AcquisitionDate": "X/Z",
    "AcquisitionTime": "X/Z", "AcquisitionDateTime": "X/Z/D", "InstanceCreationDate": "X/D",
    "InstanceCreationTime": "X/Z/D", "TimezoneOffsetFromUTC": "X", "ImageComments": "X",
    "AcquisitionComments": "X", "DerivationDescription": "X", "FrameComments": "X",
    "ReferencedImageSequence": "X/Z/U*", "SourceImageSequence": "X/Z/U*",
    "IconImageSequence": "X", "ContrastBolusAgent": "Z/D", "ContrastBolusStartTime": "X",
    "ContrastBolusStopTime": "X", "ContentCreatorName": "Z/D", "ContentSequence": "D",
    "VerifyingObserverName": "D", "VerifyingObserverSequence": "D",
    "VerifyingOrganization": "D", "PersonName": "D", "PersonIdentificationCodeSequence": "D",
    "GraphicAnnotationSequence": "D", "DigitalSignaturesSequence": "X",
    "DataSetTrailingPadding": "X", "Date": "D", "Time": "D", "DateTime": "D",
    "ObservationDateTime": "X/D", "TextString": "X", "TextComments": "X",
    "BarcodeValue": "X/Z", "LabelText": "X/Z", "SpecimenAccessionNumber": "X",
    # Clinical trial
    "ClinicalTrialSponsorName": "D", "ClinicalTrialProtocolID": "D",
    "ClinicalTrialProtocolName": "Z", "ClinicalTrialSiteID": "Z", "ClinicalTrialSiteName": "Z",
    "ClinicalTrialSubjectID": "D", "ClinicalTrialSubjectReadingID": "D",
    "ClinicalTrialTimePointID": "Z", "ClinicalTrialSeriesID": "X",
    "ClinicalTrialSeriesDescription": "X", "ClinicalTrialCoordinatingCenterName": "Z",
    # RT
    "ReviewerName": "X/Z", "ReviewDate": "Z", "ReviewTime": "Z", "ROIName": "Z",
    "ROIInterpreter": "Z", "StructureSetLabel": "D", "StructureSetName": "X",
    "StructureSetDate": "Z", "StructureSetTime": "Z", "RTPlanLabel": "D", "RTPlanName": "X",
    "RTPlanDate": "X/D", "RTPlanTime": "X/D",
}

# How a combined action is carried out (see the module docstring).
RESOLVED = {"X": "X", "Z": "Z", "D": "D", "U": "U", "Z/D": "D", "X/Z": "Z", "X/D": "D",
            "X/Z/D": "D", "X/Z/U*": "U*"}
_CATEGORIES = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
               "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D",
               "X_Z_U_STAR_TAGS": "X/Z/U*"}
# MedML additions to the table: the file meta's application entity titles and private
# information name the sending station.
_EXTRA = {0x00020016: "X", 0x00020017: "X", 0x00020018: "X", 0x00020100: "X", 0x00020102: "X"}

# Retain Patient Characteristics Option: kept (K), an age over 89 capped at 090Y.
PATIENT_CHARACTERISTICS = ("PatientAge", "PatientSex", "PatientSexNeutered", "PatientSize",
                           "PatientWeight", "EthnicGroup", "SmokingStatus", "PregnancyStatus")
# Clean Descriptors Option: cleaned (C) with the text de-identifier instead of removed.
DESCRIPTORS = ("StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments",
               "AcquisitionComments", "DerivationDescription", "StudyComments",
               "PerformedProcedureStepDescription", "RequestedProcedureDescription",
               "ScheduledProcedureStepDescription")
_OPTION_CODES = {  # CID 7050 De-identification Method
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
}

# D: dummy values by VR; a VR with none (binary, AT) is emptied instead.
_TEXT_DUMMY = "ANONYMIZED"
_DUMMY: dict[str, Any] = {
    "AE": _TEXT_DUMMY, "CS": _TEXT_DUMMY, "LO": _TEXT_DUMMY, "LT": _TEXT_DUMMY,
    "PN": _TEXT_DUMMY, "SH": _TEXT_DUMMY, "ST": _TEXT_DUMMY, "UC": _TEXT_DUMMY,
    "UT": _TEXT_DUMMY, "AS": "000Y", "DA": "19000101", "DT": "19000101000000.000000",
    "TM": "000000.00", "DS": "0", "IS": "0", "UR": "https://deidentified.invalid",
    "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0,
}
_TEXT_VRS = {"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT"}
# UIDs that name a kind of thing, not an instance: never remapped.
_KEEP_UID_KEYWORDS = ("TransferSyntaxUID", "CodingSchemeUID", "ContextUID",
                      "MappingResourceUID", "CodingSchemeRegistry")
_DICOM_ROOT = "1.2.840.10008."
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


class UidMap:
    """Old UID -> new UID, ``2.25.<decimal of the first 128 bits of HMAC-SHA256(salt, old)>``.

    The same old UID always gives the same new one: within one map (every instance of a
    study keeps the study's shared UIDs) and across runs with the same ``salt``. Keep the
    salt secret and out of the data (an environment variable, a secrets store): with it,
    anyone holding a guessed original UID can test it. Without a salt, a random one is
    drawn: consistent within this map only.
    """

    ROOT = "2.25."

    def __init__(self, salt: str | bytes | None = None) -> None:
        self.salted = salt is not None
        raw = os.urandom(32) if salt is None else salt
        self._key = raw.encode() if isinstance(raw, str) else bytes(raw)
        self._seen: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        old = str(uid).strip().rstrip("\x00")
        if not old:
            return old
        new = self._seen.get(old)
        if new is None:
            digest = hmac.new(self._key, old.encode(), hashlib.sha256).digest()
            new = self.ROOT + str(int.from_bytes(digest[:16], "big"))
            self._seen[old] = new
        return new

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True)
class DicomChange:
    """One attribute changed: where (``Seq[0].Keyword``), its tag, and the action carried
    out (X, Z, D, U, C)."""

    path: str
    tag: str
    action: str


@dataclass
class DicomReport:
    """What ``deidentify_dicom`` did to one instance; never any original value."""

    source: str
    changes: list[DicomChange] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(c.action for c in self.changes).items()))

    def to_dict(self) -> dict:
        return {"source": self.source, "options": self.options, "counts": self.counts,
                "changes": [[c.path, c.tag, c.action] for c in self.changes]}


@dataclass
class FolderReport:
    """What ``deidentify_dicom_folder`` did: one report per file, files skipped (not
    DICOM), and where the JSON report was written."""

    files: list[DicomReport]
    skipped: list[str]
    report_path: Path


@lru_cache(maxsize=1)
def profile_table() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """Table E.1-1 from dicom-anonymizer: {tag: action} and the repeating-group entries
    (group, element, group mask, element mask, action) such as overlays (60xx,3000)."""
    name = f"dicomanonymizer.dicom_anonymization_databases.{TABLE_VERSION}"
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise MedMLError(f"the DICOM de-identification table needs {TABLE_PACKAGE} "
                         f"({exc}); install the project again: pip install -e .") from exc
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, action in _CATEGORIES.items():
        for entry in getattr(module, category):
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            else:
                masked.append((entry[0], entry[1], entry[2], entry[3], action))
    return exact, tuple(masked)


def deidentify_dicom(ds_or_path: Dataset | str | Path, uid_map: UidMap, *,
                     patient_pseudonym: str | None = None,
                     retain_patient_characteristics: bool = False,
                     clean_descriptors: bool = False,
                     allow_burned_in_annotation: bool = False,
                     source: str | None = None) -> tuple[Dataset, DicomReport]:
    """De-identify one DICOM instance (a path, read here, or a pydicom Dataset, changed in
    place) with the basic profile; returns the dataset and the report of what changed.

    ``uid_map`` is shared by every instance of a run so that UIDs stay consistent.
    ``patient_pseudonym`` (a study code the caller assigns, never derived from the
    patient's data) becomes PatientID and PatientName instead of the profile's empty or
    dummy values. The two options are those of Annex E (module docstring). Raises
    BadInputError for a file that is not DICOM or has burned-in annotation, CheckFailed
    when the result still holds an identifying original value.
    """
    ds = _read(ds_or_path) if isinstance(ds_or_path, str | Path) else ds_or_path
    where = source or str(ds_or_path if isinstance(ds_or_path, str | Path)
                          else getattr(ds, "filename", None) or "dataset")
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES" and not allow_burned_in_annotation:
        raise BadInputError(f"{where}: BurnedInAnnotation is YES: the pixels may show "
                            "identifying text that header cleaning cannot remove; mask them "
                            "first or pass allow_burned_in_annotation=True")
    options = [o for o, on in (("retain_patient_characteristics", retain_patient_characteristics),
                               ("clean_descriptors", clean_descriptors)) if on]
    report = DicomReport(source=where, options=options)
    original = _header_copy(ds)
    overrides: dict[str, str] = {}
    if retain_patient_characteristics:
        overrides.update(dict.fromkeys(PATIENT_CHARACTERISTICS, "K"))
    if clean_descriptors:
        overrides.update(dict.fromkeys(DESCRIPTORS, "C"))
    cleaner = _Cleaner(uid_map, overrides, report)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        cleaner.clean(meta, "")
    cleaner.clean(ds, "")
    if patient_pseudonym is not None:
        ds.PatientID = ds.PatientName = patient_pseudonym
    _mark(ds, options)
    if meta is not None and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    problems = check_basic_profile(original, ds, retained=set(overrides))
    if problems:
        raise CheckFailed(f"{where}: de-identification left identifying data in "
                          f"{len(problems)} attribute(s): {'; '.join(problems[:5])}")
    return ds, report


def deidentify_dicom_folder(src: str | Path, dst: str | Path, uid_map: UidMap, *,
                            pseudonyms: Mapping[str, str] | None = None,
                            report_path: str | Path | None = None,
                            **options: Any) -> FolderReport:
    """De-identify every DICOM file under ``src`` into ``dst`` (same relative paths), with
    one ``uid_map`` so that studies and series stay together, and write a JSON report
    (``dst/dicom_deid_report.json`` unless ``report_path``): per file, each changed attribute
    and its action, never a value. Files that are not DICOM (no ``.dcm`` suffix, no DICM
    preamble) are skipped and listed. ``pseudonyms`` maps a file's relative path (as in
    an import's ``patients.csv``) to its patient pseudonym; ``options`` are those of
    ``deidentify_dicom``. Files are written as they are done (an existing file of the same
    name is overwritten): on an error, ``dst`` holds the files before it, and no report.
    Skipped files are not copied.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise BadInputError(f"{src}: not a folder; give the folder of DICOM files")
    if dst.resolve() == src.resolve() or dst.resolve().is_relative_to(src.resolve()):
        raise BadInputError(f"{dst}: the output folder must be outside {src}")
    pseudonyms = pseudonyms or {}
    files, skipped = [], []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        (files if _is_dicom_file(path) else skipped).append(rel)
    if not files:
        raise BadInputError(f"{src}: no DICOM files found (*.dcm or files with a DICM "
                            "preamble)")
    reports = []
    for rel in files:
        ds, report = deidentify_dicom(src / rel, uid_map, patient_pseudonym=pseudonyms.get(rel),
                                      source=rel, **options)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out)
        reports.append(report)
    total: Counter[str] = Counter()
    for r in reports:
        total.update(r.counts)
    target = Path(report_path) if report_path else dst / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    body = {"method": METHOD, "table": f"{TABLE_PACKAGE} {TABLE_VERSION}",
            "uids": "HMAC-SHA256 with a secret salt" if uid_map.salted else "random salt",
            "n_files": len(reports), "counts": dict(sorted(total.items())),
            "skipped": skipped, "files": [r.to_dict() for r in reports]}
    target.write_text(json.dumps(body, indent=1) + "\n")
    log.info("de-identified %d DICOM files into %s (%d skipped)", len(reports), dst,
             len(skipped))
    return FolderReport(files=reports, skipped=skipped, report_path=target)


def check_basic_profile(original: Dataset, deidentified: Dataset, *,
                        retained: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Problems, one line each (attribute and path, never a value), where ``deidentified``
    still holds an original identifying value: an attribute of ``BASIC_PROFILE`` (unless
    ``retained`` by an option), a person name, an instance UID, a private tag; or lacks
    PatientIdentityRemoved=YES. Empty when the header is clean."""
    problems = []
    for path, elem in _walk(original):
        kw = elem.keyword
        if elem.VR == "SQ" or _is_empty(elem.value) or kw in retained:
            continue
        identifying = (kw in BASIC_PROFILE or elem.tag.is_private or elem.VR == "PN"
                       or (elem.VR == "UI" and _is_instance_uid(kw, elem.value)))
        if not identifying:
            continue
        new = _lookup(deidentified, path)
        if new is None or _is_empty(new.value):
            continue
        label = _path_label(path, new)
        if elem.tag.is_private:
            problems.append(f"{label}: private tag still present")
        elif _values(new.value) == _values(elem.value) and not _is_dummy(elem.value):
            problems.append(f"{label}: original value kept")
    if str(deidentified.get("PatientIdentityRemoved", "")) != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    return problems


# ---------------------------------------------------------------------------------------


class _Cleaner:
    """Carries out the table's actions on one dataset and its sequences, recording each."""

    def __init__(self, uid_map: UidMap, overrides: dict[str, str], report: DicomReport) -> None:
        self.uid_map = uid_map
        self.overrides = overrides
        self.report = report
        self.exact, self.masked = profile_table()

    def action(self, elem: DataElement) -> str | None:
        override = self.overrides.get(elem.keyword)
        if override:
            return override
        tag = int(elem.tag)
        profile = self.exact.get(tag) or _EXTRA.get(tag)
        if profile is None:
            group, element = tag >> 16, tag & 0xFFFF
            for g, e, gmask, emask, act in self.masked:
                if group & gmask == g & gmask and element & emask == e & emask:
                    profile = act
                    break
        if profile is not None:
            return RESOLVED[profile]
        # MedML additions for what the table does not list.
        if elem.VR == "PN" and not _is_empty(elem.value):
            return "Z"
        if elem.VR == "UI" and _is_instance_uid(elem.keyword, elem.value):
            return "U"
        return None

    def record(self, prefix: str, elem: DataElement, action: str) -> None:
        self.report.changes.append(DicomChange(prefix + _name(elem), _tag(elem), action))

    def clean(self, ds: Dataset, prefix: str) -> None:
        for elem in list(ds):
            if elem.tag.is_private:
                self.record(prefix, elem, "X")
                del ds[elem.tag]
                continue
            action = self.action(elem)
            if action is None or action == "K" or action == "U*":
                if elem.VR == "SQ":
                    for i, item in enumerate(elem.value):
                        self.clean(item, f"{prefix}{_name(elem)}[{i}].")
                elif action == "K" and elem.keyword == "PatientAge" and _over_89(elem.value):
                    elem.value = "090Y"
                    self.record(prefix, elem, "C")
                continue
            if action == "X":
                self.record(prefix, elem, "X")
                del ds[elem.tag]
            elif action == "Z":
                if not _is_empty(elem.value):
                    elem.value = elem.empty_value
                    self.record(prefix, elem, "Z")
            elif action == "U":
                if elem.VR == "UI" and not _is_empty(elem.value) and not _dicom_defined(elem):
                    self._remap(elem)
                    self.record(prefix, elem, "U")
            elif action == "D":
                self._dummy(elem, prefix)
            elif action == "C" and elem.VR in _TEXT_VRS:
                self._clean_text(elem, prefix)
            elif action == "C":  # not text: nothing to clean it with
                self.record(prefix, elem, "X")
                del ds[elem.tag]

    def _remap(self, elem: DataElement) -> None:
        """U: each instance UID mapped; a DICOM-defined one (a well-known frame of
        reference, say) kept, as it names a shared thing, not this patient's."""
        def new(uid: str) -> str:
            return uid if str(uid).startswith(_DICOM_ROOT) else self.uid_map(uid)

        elem.value = [new(v) for v in elem.value] if elem.VM > 1 else new(elem.value)

    def _dummy(self, elem: DataElement, prefix: str) -> None:
        """D: a dummy value of the VR; a UID remapped; a sequence's every item element
        replaced the same way (its UIDs remapped, so references still resolve)."""
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                inner = f"{prefix}{_name(elem)}[{i}]."
                for sub in list(item):
                    if sub.tag.is_private:
                        self.record(inner, sub, "X")
                        del item[sub.tag]
                    else:
                        self._dummy(sub, inner)
            return
        if _is_empty(elem.value):
            return
        if elem.VR == "UI":
            if _is_instance_uid(elem.keyword, elem.value):
                self._remap(elem)
                self.record(prefix, elem, "U")
            return
        if elem.VR in _DUMMY:
            elem.value = _DUMMY[elem.VR]
            self.record(prefix, elem, "D")
        else:
            elem.value = elem.empty_value
            self.record(prefix, elem, "Z")

    def _clean_text(self, elem: DataElement, prefix: str) -> None:
        from medml.deid.text import deidentify_text

        if _is_empty(elem.value):
            return
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        cleaned = [deidentify_text(str(v), source=prefix + _name(elem))[0] for v in values]
        if cleaned != [str(v) for v in values]:
            elem.value = cleaned if elem.VM > 1 else cleaned[0]
        self.record(prefix, elem, "C")


def _mark(ds: Dataset, options: list[str]) -> None:
    """Set the attributes that say how the instance was de-identified (PS3.15 E.1.1)."""
    from pydicom import Dataset as PyDataset

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    codes = []
    for key in ("basic", *options):
        value, meaning = _OPTION_CODES[key]
        item = PyDataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    ds.LongitudinalTemporalInformationModified = "REMOVED"


def _read(path: str | Path) -> Dataset:
    import pydicom

    try:
        return pydicom.dcmread(path)
    except FileNotFoundError as exc:
        raise BadInputError(f"{path}: no such file") from exc
    except Exception as exc:  # InvalidDicomError, EOFError, OSError...
        raise BadInputError(f"{path}: not a readable DICOM file ({_short(exc)}); "
                            "remove or replace it") from exc


def _header_copy(ds: Dataset) -> Dataset:
    """A deep copy of the header without the pixel data, to check the result against."""
    from pydicom import Dataset as PyDataset

    copy_ = PyDataset()
    for elem in ds:
        if int(elem.tag) not in _PIXEL_TAGS:
            copy_.add(copy.deepcopy(elem))
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        copy_.file_meta = copy.deepcopy(meta)
    return copy_


def _walk(ds: Dataset, path: tuple = ()) -> Iterator[tuple[tuple, DataElement]]:
    """Every element of ``ds`` (file meta first), at any depth, with its path: a tuple of
    (tag, item index or None) steps."""
    meta = getattr(ds, "file_meta", None)
    if not path and meta is not None:
        for elem in meta:
            yield ((int(elem.tag), None),), elem
    for elem in ds:
        here = (*path, (int(elem.tag), None))
        yield here, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from _walk(item, (*path, (int(elem.tag), i)))


def _lookup(ds: Dataset, path: tuple) -> DataElement | None:
    current: Any = ds
    if path[0][0] >> 16 == 0x0002:
        current = getattr(ds, "file_meta", None)
    for tag, index in path:
        if current is None or tag not in current:
            return None
        elem = current[tag]
        if index is None:
            return elem
        if elem.VR != "SQ" or index >= len(elem.value):
            return None
        current = elem.value[index]
    return None


def _path_label(path: tuple, elem: DataElement) -> str:
    from pydicom.datadict import keyword_for_tag

    parts = []
    for tag, index in path:
        name = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        parts.append(name if index is None else f"{name}[{index}]")
    return ".".join(parts)


def _name(elem: DataElement) -> str:
    return elem.keyword or _tag(elem)


def _tag(elem: DataElement) -> str:
    return f"({elem.tag.group:04X},{elem.tag.element:04X})"


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bytes):
        return not value.strip(b"\x00 ")
    if isinstance(value, SequenceABC) and not isinstance(value, str):
        return len(value) == 0
    return not str(value).strip("\x00 ")


def _values(value: Any) -> list[str]:
    if isinstance(value, SequenceABC) and not isinstance(value, str | bytes):
        return [str(v).strip() for v in value]
    return [str(value).strip()]


def _is_dummy(value: Any) -> bool:
    return all(v in {str(d) for d in _DUMMY.values()} for v in _values(value))


def _is_instance_uid(keyword: str, value: Any) -> bool:
    """True for a UID that names an instance (study, series, image, frame of reference...),
    False for class, transfer syntax and DICOM-defined UIDs, which name kinds of things."""
    if keyword.endswith("ClassUID") or keyword in _KEEP_UID_KEYWORDS:
        return False
    return any(v and not v.startswith(_DICOM_ROOT) for v in _values(value))


def _dicom_defined(elem: DataElement) -> bool:
    return all(not v or v.startswith(_DICOM_ROOT) for v in _values(elem.value))


def _over_89(age: Any) -> bool:
    m = re.fullmatch(r"(\d{3})Y", str(age or "").strip())
    return bool(m) and int(m.group(1)) > 89


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
