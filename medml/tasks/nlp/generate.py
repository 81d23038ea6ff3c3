"""Demo clinical notes from templates: entities of three types (``Disease``, ``Drug``,
``Procedure``), written out or abbreviated (HTN, COPD, CABG...), some negated ("denies
chest pain", "no evidence of pneumonia": still tagged, negation is not NER's job), and
planted PHI (patient and clinician names, dates, phone numbers, MRNs, street addresses,
e-mail addresses) for the de-identification stage to remove. Several notes per patient
share the patient's name, MRN and address, as real notes do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medml.data.dataset import DatasetMeta
from medml.tasks.nlp.documents import Doc, split_at, tokenize, write_doc

TYPES = ["Disease", "Drug", "Procedure"]
DEFAULTS: dict[str, Any] = {"n_patients": 60, "notes_per_patient": [1, 3],
                            "sentences": [4, 8]}
SITES = ["site-a", "site-b", "site-c"]
AGE_BANDS = ["18-39", "40-59", "60-79", "80+"]

DISEASES = ["hypertension", "HTN", "type 2 diabetes mellitus", "DM2", "atrial fibrillation",
            "AFib", "congestive heart failure", "CHF", "chronic obstructive pulmonary disease",
            "COPD", "pneumonia", "asthma", "chronic kidney disease", "CKD", "myocardial "
            "infarction", "MI", "deep vein thrombosis", "DVT", "urinary tract infection", "UTI",
            "hypothyroidism", "migraine", "gastroesophageal reflux disease", "GERD",
            "rheumatoid arthritis", "osteoarthritis", "sepsis", "anemia", "chest pain",
            "shortness of breath", "Crohn's disease", "hyperlipidemia", "stroke", "TIA"]
DRUGS = ["metformin", "lisinopril", "atorvastatin", "aspirin", "ASA", "warfarin", "apixaban",
         "metoprolol", "furosemide", "insulin glargine", "albuterol", "levothyroxine",
         "omeprazole", "amoxicillin", "ceftriaxone", "prednisone", "heparin", "amlodipine",
         "sumatriptan", "acetaminophen", "ibuprofen", "vancomycin", "HCTZ", "clopidogrel"]
PROCEDURES = ["coronary artery bypass grafting", "CABG", "percutaneous coronary intervention",
              "PCI", "colonoscopy", "echocardiogram", "TTE", "chest x-ray", "CXR",
              "CT scan of the chest", "MRI of the brain", "appendectomy", "cholecystectomy",
              "hip replacement", "upper endoscopy", "EGD", "lumbar puncture", "dialysis",
              "cardiac catheterization", "knee arthroscopy", "ECG", "bronchoscopy"]
FIRST = ["John", "Mary", "James", "Linda", "Robert", "Patricia", "Michael", "Jennifer",
         "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Thomas", "Karen"]
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
        "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
        "Taylor", "Moore", "Jackson", "Martin", "Thompson", "White", "Harris", "Clark"]
STREETS = ["Oak Street", "Maple Avenue", "Cedar Lane", "Elm Road", "Pine Drive", "Lake Blvd"]
CITIES = [("Springfield", "IL", "62704"), ("Madison", "WI", "53703"),
          ("Columbus", "OH", "43215"), ("Austin", "TX", "78701"), ("Denver", "CO", "80202")]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]

# Sentence templates: {D} disease, {R} drug, {P} procedure; {PHI:kind} identifiers.
SENTENCES = [
    "Patient has a history of {D} and {D}.",
    "History of {D}, on {R} daily.",
    "She was started on {R} for {D}.",
    "He takes {R} 20 mg and {R} for {D}.",
    "Denies {D} or {D}.",
    "No evidence of {D} on {P}.",
    "{P} on {PHI:date} showed no {D}.",
    "Status post {P} for {D} in 2015.",
    "Negative for {D}; {R} was held.",
    "Plan: continue {R}, schedule {P}.",
    "Pt with known {D}, s/p {P}.",
    "Rule out {D}; order {P}.",
    "Discontinue {R} given risk of {D}.",
    "Seen by Dr. {PHI:doctor} who recommended {P}.",
    "Follow up with Dr. {PHI:doctor} on {PHI:date}.",
    "Family history of {D}.",
    "Allergic to {R} (rash).",
    "The patient tolerated the {P} well.",
]
HEADER = ["Patient: {PHI:patient}", "MRN: {PHI:mrn}", "DOB: {PHI:dob}"]
FOOTER = [
    "Contact phone: {PHI:phone}.",
    "Lives at {PHI:address}.",
    "Email: {PHI:email}",
    "Electronically signed by Dr. {PHI:doctor} on {PHI:date}.",
]


def _date(rng: np.random.Generator) -> str:
    y, m, d = int(rng.integers(2015, 2025)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return (f"{m}/{d}/{y}" if rng.random() < 0.5 else f"{MONTHS[m - 1]} {d}, {y}")


def _patient(rng: np.random.Generator, k: int) -> dict[str, str]:
    first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
    city, state, zipc = CITIES[rng.integers(len(CITIES))]
    return {
        "patient": f"{first} {last}",
        "mrn": f"{int(rng.integers(10_000_000, 99_999_999))}",
        "dob": f"{int(rng.integers(1, 13))}/{int(rng.integers(1, 29))}/"
               f"{int(rng.integers(1935, 2000))}",
        "phone": f"({int(rng.integers(201, 990))}) {int(rng.integers(200, 999))}-"
                 f"{int(rng.integers(1000, 9999))}",
        "address": f"{int(rng.integers(10, 9999))} {STREETS[rng.integers(len(STREETS))]}, "
                   f"{city}, {state} {zipc}",
        "email": f"{first.lower()}.{last.lower()}{k}@example.org",
    }


def make_note(rng: np.random.Generator, person: dict[str, str], n_sentences: int
              ) -> tuple[Doc, list[str]]:
    """One note and the PHI strings planted in it."""
    pools = {"D": ("Disease", DISEASES), "R": ("Drug", DRUGS), "P": ("Procedure", PROCEDURES)}
    parts: list[str] = []
    ents: list[tuple[int, int, str]] = []
    planted: list[str] = []
    pos = 0

    def emit(template: str) -> None:
        nonlocal pos
        i = 0
        while i < len(template):
            j = template.find("{", i)
            if j < 0:
                j = len(template)
            lit = template[i:j]
            parts.append(lit)
            pos += len(lit)
            if j == len(template):
                break
            k = template.index("}", j)
            slot = template[j + 1:k]
            if slot.startswith("PHI:"):
                kind = slot[4:]
                if kind == "doctor":
                    value = f"{LAST[rng.integers(len(LAST))]}"
                elif kind == "date":
                    value = _date(rng)
                else:
                    value = person[kind]
                planted.append(value)
            else:
                label, pool = pools[slot]
                value = pool[rng.integers(len(pool))]
                ents.append((pos, pos + len(value), label))
            parts.append(value)
            pos += len(value)
            i = k + 1

    for line in HEADER:
        emit(line + "\n")
    emit("\n")
    for s in rng.choice(len(SENTENCES), n_sentences):
        emit(SENTENCES[int(s)] + ("  " if rng.random() < 0.2 else " "))
    emit("\n\n")
    for line in FOOTER:
        if rng.random() < 0.8:
            emit(line + "\n")
    text = "".join(parts)
    cuts = {x for s, e, _ in ents for x in (s, e)}
    return Doc(text, ents, split_at(tokenize(text), cuts)), planted


def generate_notes(params: dict[str, Any], seed: int
                   ) -> list[tuple[str, dict[str, Any], Doc, list[str]]]:
    """``(id, manifest fields, note, planted PHI)`` for every demo note."""
    p = {**DEFAULTS, **params}
    rng = np.random.default_rng(seed)
    lo, hi = p["notes_per_patient"]
    s_lo, s_hi = p["sentences"]
    out = []
    for pi in range(int(p["n_patients"])):
        person = _patient(rng, pi)
        fields = {"patient_id": f"P{pi:04d}", "site": SITES[rng.integers(len(SITES))],
                  "sex": str(rng.choice(["F", "M"])),
                  "age_band": AGE_BANDS[rng.integers(len(AGE_BANDS))]}
        for k in range(int(rng.integers(lo, hi + 1))):
            doc, planted = make_note(rng, person, int(rng.integers(s_lo, s_hi + 1)))
            out.append((f"P{pi:04d}-{k}", fields, doc, planted))
    return out


def generate(out_dir: Path, params: dict[str, Any], seed: int, name: str
             ) -> tuple[pd.DataFrame, DatasetMeta]:
    """Write the demo notes into ``out_dir`` and return the manifest (raw: with PHI)."""
    rows = []
    for eid, fields, doc, _ in generate_notes(params, seed):
        rows.append({"id": eid, **fields, "source_file": "generated", "source_line": None,
                     "document_id": eid, **write_doc(out_dir, eid, doc)})
    manifest = pd.DataFrame(rows)
    manifest["split"] = None  # the split stage assigns them, by patient
    used = {k: {**DEFAULTS, **params}[k] for k in DEFAULTS}
    meta = DatasetMeta(name=name, task="nlp", classes=[], source="generated", format="demo",
                       extra={"generator": used, "seed": seed, "entity_types": list(TYPES),
                              "tag_scheme": "IOB2"})
    return manifest, meta
