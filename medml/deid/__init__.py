"""De-identification of clinical data before it is versioned (SPEC: import -> de-identify
-> version): clinical text and speech transcripts (``medml.deid.text``, HIPAA Safe Harbor
identifiers -> typed placeholders) and DICOM headers (``medml.deid.dicom``, the DICOM
PS3.15 Annex E Basic Application Level Confidentiality Profile), and a dataset's manifest
(``medml.deid.manifest``: the ``deid`` stage of every dataset). Reports record what was
changed and where, never an original value. pydicom is imported only when DICOM is used.
"""

from __future__ import annotations

from medml.deid.dicom import (
    BASIC_PROFILE,
    DicomChange,
    DicomReport,
    FolderReport,
    UidMap,
    check_basic_profile,
    deidentify_dicom,
    deidentify_dicom_folder,
)
from medml.deid.text import PhiSpan, deidentify_text, find_phi

__all__ = [
    "BASIC_PROFILE", "DicomChange", "DicomReport", "FolderReport", "PhiSpan", "UidMap",
    "check_basic_profile", "deidentify_dicom", "deidentify_dicom_folder", "deidentify_text",
    "find_phi",
]
