"""De-identify clinical text: HIPAA Safe Harbor identifiers become typed placeholders.

``deidentify_text(text)`` returns the text with every identifier it finds replaced by a
placeholder such as ``[NAME]``, ``[DATE]`` or ``[MRN]``, and one ``PhiSpan`` per
replacement (type, offsets and length in the original text, the placeholder, and, with a
secret ``salt``, a keyed hash of the original so two reports can be matched). No span
holds the original string: the change list can be logged, stored and shown.

Why rules and not a model: the maintained NLP de-identifier (Microsoft Presidio) finds
names with a spaCy model, and no spaCy English model is published on the package
registry this project installs from (only third-party re-uploads); nothing may be
downloaded at run time. So detection is a documented set of regular expressions, with
context words and a short list of common first names for person names. It is
deterministic (same text, same output) and fast, and errs on the side of removing: a
clinical number of seven digits or more is taken for an identifier.

What is found (placeholder: how):

- ``[NAME]``: a word sequence after a title (Dr., Mr., Mrs., Ms., Prof., Nurse...); after
  a label with a colon (``Patient:``, ``Name:``, ``Attending:``, ``Contact:``, ``Wife:``...);
  after ``signed by``, ``dictated by``, ``seen by``...; after ``his wife``, ``her son``...;
  before a credential (``, MD``, ``RN``, ``PA-C``...); a common first name followed by a
  capitalised word; then every other occurrence of a name word already found.
- ``[DATE]``: numeric dates (3/14/2021, 14.03.21, 2021-03-14, 20210314), dates with month
  names (March 14, 2021; 14 Mar 2021; 14-MAR-2021; March 2021; March third), a year after
  ``DOB``/``born``. A year alone is kept (Safe Harbor allows it).
- ``[AGE]``: ages of 90 and over (``92-year-old``, ``92 yo``, ``age 92``); younger ages stay.
- ``[PHONE]``, ``[FAX]``: North American and ``+``-prefixed international numbers; fax
  when the nearest preceding label is ``fax`` (or ``F:``).
- ``[EMAIL]``, ``[URL]``, ``[IP]`` (IPv4 and IPv6), ``[SSN]`` (123-45-6789, or labelled).
- Labelled identifiers: ``[MRN]`` (MRN, medical record number, chart #...), ``[ACCOUNT]``
  (account, acct, encounter, billing...), ``[HEALTH_PLAN]`` (member ID, policy, Medicare...),
  ``[LICENSE]`` (licence, DEA, NPI, certificate, passport...), ``[VEHICLE]`` (VIN, licence
  plate; also any 17-character VIN), ``[DEVICE]`` (serial number, S/N, UDI...), ``[ID]``
  (ID, identifier, accession...).
- ``[ADDRESS]``: street addresses (number, street name, suffix, unit, city, state, ZIP),
  P.O. boxes, ``City, ST 12345``, the rest of an ``Address:`` line; ``[LOCATION]``: a city
  after ``lives in``/``resides in`` or before a state name; ``[ZIP]``: a ZIP code after a
  state code or a ``ZIP`` label.
- ``[ID]`` as a catch-all: any token with seven digits or more, or five digits and letters.

Text with no capital letters at all (a speech transcript) is read in lower-case mode:
titles, labels and first names are matched in any case. Limits: a name that appears with
no title, label, credential or known first name is not found; nor are spelled-out numbers
("five five five ...") or free-standing city and hospital names.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from medml.errors import BadInputError

TYPES = ("NAME", "DATE", "AGE", "PHONE", "FAX", "EMAIL", "URL", "IP", "SSN", "MRN", "ACCOUNT",
         "HEALTH_PLAN", "LICENSE", "VEHICLE", "DEVICE", "ADDRESS", "LOCATION", "ZIP", "ID")


@dataclass(frozen=True)
class PhiSpan:
    """One identifier found in a text: where it was and what replaced it, never what it was.

    ``start``/``end`` are offsets in the original text; ``digest`` is a keyed hash of the
    original string (hex, 16 characters) when a salt was given, else None.
    """

    type: str
    start: int
    end: int
    replacement: str
    digest: str | None = None

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict:
        return {**asdict(self), "length": self.length}


@dataclass(frozen=True)
class _Hit:
    type: str
    start: int
    end: int
    rank: int  # lower wins an overlap


def deidentify_text(text: str, *, salt: str | bytes | None = None,
                    source: str = "text") -> tuple[str, list[PhiSpan]]:
    """``text`` with every identifier found replaced by ``[TYPE]``, and the replacements.

    Deterministic. ``salt`` (a secret, kept out of the data) adds a keyed hash of each
    original string to its span; ``source`` names the text in errors (a file, a row).
    """
    spans = find_phi(text, salt=salt, source=source)
    out: list[str] = []
    pos = 0
    for s in spans:
        out.append(text[pos:s.start])
        out.append(s.replacement)
        pos = s.end
    out.append(text[pos:])
    return "".join(out), spans


def find_phi(text: str, *, salt: str | bytes | None = None,
             source: str = "text") -> list[PhiSpan]:
    """The identifiers in ``text`` as non-overlapping spans, in text order (see the module
    docstring for what is found). An empty list means none was found."""
    if not isinstance(text, str):
        raise BadInputError(f"{source}: expected text (str), got {type(text).__name__}")
    if not text.strip():
        return []
    lower_mode = not any(c.isupper() for c in text)
    # Placeholders left by an earlier pass ("Address: [ADDRESS]") are not identifiers: a
    # hit made of nothing else is dropped.
    hits = [h for h in _candidates(text, lower_mode)
            if any(c.isalnum() for c in _PLACEHOLDER.sub("", text[h.start:h.end]))]
    chosen = _resolve(hits, [])
    # Name words found once are names everywhere in the same text ("Mr. Smith ... Smith").
    extra = list(_propagate_names(text, chosen, lower_mode))
    if extra:
        chosen = _resolve(extra, chosen)
    merged: list[_Hit] = []
    for h in sorted(chosen, key=lambda h: h.start):
        prev = merged[-1] if merged else None
        if (prev and prev.type == h.type == "NAME"
                and not text[prev.end:h.start].strip(" \t")):  # "[NAME] [NAME]" -> "[NAME]"
            merged[-1] = _Hit("NAME", prev.start, h.end, prev.rank)
        else:
            merged.append(h)
    key = salt.encode() if isinstance(salt, str) else salt
    spans = []
    for h in merged:
        digest = None
        if key is not None:
            digest = hmac.new(key, text[h.start:h.end].encode(), hashlib.sha256).hexdigest()[:16]
        spans.append(PhiSpan(h.type, h.start, h.end, f"[{h.type}]", digest))
    return spans


# ---------------------------------------------------------------------------------------
# Building blocks

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
          r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_ORDINAL_WORDS = (r"(?:(?:twenty|thirty)[- ](?:first|second|third|fourth|fifth|sixth|seventh"
                  r"|eighth|ninth)|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth"
                  r"|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth"
                  r"|seventeenth|eighteenth|nineteenth|twentieth|thirtieth)")
_DAY = rf"(?:(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?|{_ORDINAL_WORDS})"
_YEAR = r"(?:(?:19|20)\d{2}|'\d{2})"
# A number followed by one of these is a quantity, not a day ("May 5 mg").
_NOT_UNIT = (r"(?!\s*(?:mg|mcg|g|kg|ml|l|units?|iu|%|x|times|doses?|tabs?|tablets?|days?|hours?"
             r"|hrs?|weeks?|wks?|months?|years?|yrs?|lbs?|cm|mm)\b)")



_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(TYPES) + r")\]")


def _words(text: str) -> list[str]:
    return text.split()


_STATE_CODES = _words("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS "
                      "MO MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI "
                      "WY PR")
_STATE_NAMES = ("Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida"
                "|Georgia|Hawaii|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine"
                "|Maryland|Massachusetts|Michigan|Minnesota|Mississippi|Missouri|Montana"
                "|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|North Carolina"
                "|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina"
                "|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|West Virginia"
                "|Wisconsin|Wyoming|Puerto Rico")
_STATE = rf"(?:{'|'.join(_STATE_CODES)}|{_STATE_NAMES})"
_ZIP = r"\d{5}(?:-\d{4})?"
_CAP = r"[A-Z][A-Za-z'.\-]*"
_CITY_WORD = r"[A-Z][A-Za-z'\-]*(?!\w)"  # no period: "Rockford. Zip" is not one place
_CITY = rf"(?:St\.[ \t]+)?{_CITY_WORD}(?:[ \t]+{_CITY_WORD}){{0,2}}"
_STREET_SUFFIX = (r"(?i:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct"
                  r"|Way|Place|Pl|Terrace|Ter|Circle|Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq"
                  r"|Trail|Trl|Alley|Plaza|Loop|Crescent|Close)")
_UNIT = (r"(?:,?[ \t]*(?i:Apt|Apartment|Suite|Ste|Unit|Room|Rm|Floor|Fl|Bldg|Building|#)\.?"
         r"[ \t]*#?[ \t]*[A-Za-z0-9\-]+)")
_STREET_WORD = rf"(?:{_CAP}|\d+(?:st|nd|rd|th))"

# Person names: a capitalised word (Smith, McDonald, O'Brien, Smith-Jones) or an ALL-CAPS
# one, initials (J. or J.R.), joined by one or two spaces (never a tab or a line break:
# those separate columns and lines).
_TOKEN = (r"(?:[A-Z][a-z]*(?:[A-Z][a-z]+)?(?:['’\-][A-Z]?[a-z]+)*|[A-Z]{2,}(?:['’\-][A-Z]+)*)"
          r"(?![A-Za-z0-9])")
_INITIAL = r"(?:[A-Z]\.(?: ?[A-Z]\.)?)"
_NAME = rf"(?:(?:{_INITIAL} {{0,2}})?{_TOKEN}(?: {{1,2}}(?:{_INITIAL}|{_TOKEN})){{0,3}})"
_LAST_FIRST = rf"(?:{_TOKEN}, {{0,2}}{_TOKEN}(?: {{1,2}}(?:{_INITIAL}|{_TOKEN}))?)"
_TITLE = r"(?:Dr|Mr|Mrs|Ms|Mx|Prof|DR|MR|MRS|MS)\.?|Doctor|Professor|Nurse|Miss|Sister|Father"
_CREDENTIAL = (r"(?:MD|M\.D\.|DO|D\.O\.|RN|NP|PA-C|PA|PhD|Ph\.D\.|MBBS|FACS|FACP|DDS|DMD"
               r"|PharmD|LPN|CNA|CRNA|LCSW|MSW|APRN|DNP|MPH)")
_COLON_LABELS = (r"patient(?:'s)?[ \t]+name|pt\.?[ \t]+name|name|patient|pt|attending(?:[ \t]+"
                 r"physician)?|resident|fellow|physician|provider|pcp|primary[ \t]+care(?:[ \t]+"
                 r"(?:physician|provider))?|referring(?:[ \t]+(?:physician|provider|doctor))?"
                 r"|surgeon|anesthesiologist|radiologist|pathologist|nurse|rn|np|consultant"
                 r"|author|contact|emergency[ \t]+contact|next[ \t]+of[ \t]+kin|nok|guardian"
                 r"|spouse|husband|wife|mother|father|son|daughter|brother|sister|parent"
                 r"|caregiver|interpreter|witness|informant|attn")
_BY_LABELS = (r"(?:electronically[ \t]+)?(?:co-?)?signed[ \t]+by|dictated[ \t]+by|transcribed"
              r"[ \t]+by|reviewed[ \t]+by|(?:seen[ \t]+and[ \t]+)?examined[ \t]+by|seen[ \t]+by"
              r"|approved[ \t]+by|verified[ \t]+by|reported[ \t]+by|read[ \t]+by|accompanied"
              r"[ \t]+by|referred[ \t]+by|performed[ \t]+by|authored[ \t]+by")
_RELATIVES = (r"(?:his|her|their|the[ \t]+patient's|pt's)[ \t]+(?:wife|husband|spouse|partner"
              r"|son|daughter|mother|father|brother|sister|friend|neighbou?r|caregiver|grandson"
              r"|granddaughter|niece|nephew|aunt|uncle|cousin|fianc[eé]e?)")

# Common first names that are not also common English or clinical words (no April, May,
# Will, Grace, Mark, Ray, Addison...): a first name here followed by a capitalised word is
# a person's name.
FIRST_NAMES = frozenset(_words("""
aaron abigail adam adrian ahmed aisha alan albert alejandro alexander alexandra alice alicia
allison amanda amelia amy ana andrea andrew angela anita ann anna anne anthony antonio arthur
ashley barbara benjamin betty beverly brandon brenda brian bruce bryan carlos carmen carol
caroline catherine charles charlotte cheryl christina christine christopher cynthia daniel
david deborah debra denise dennis diana diane donald donna dorothy douglas edward eleanor
elena elizabeth emily emma eric ethan eugene evelyn fatima francisco frances gabriel gary
george gerald gloria gregory hannah harold heather helen henry howard isabella jacob jacqueline
james janet janice jason jeffrey jennifer jeremy jessica joan john jonathan jose joseph joshua
juan judith julia julie justin karen katherine kathleen kathryn keith kelly kenneth kevin
kimberly larry laura lauren lawrence linda lisa lori louis lucas luis madison manuel margaret
maria marie marilyn martha mary matthew megan melissa michael michelle miguel mohammed muhammad
nancy natalie nathan nicholas nicole noah olivia pamela patricia patrick paul peter philip
rachel rajesh ralph rebecca richard robert roger ronald ruth ryan samantha samuel sandra sara
sarah scott sean sharon shirley sophia stephanie stephen steven susan teresa theresa thomas
timothy tyler victoria vincent virginia walter wayne william yolanda zachary
"""))

# Words that end or start a name match but are not part of the name (section headers,
# common sentence starters, clinical words), compared in lower case.
STOP_WORDS = frozenset(_words("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
out over own same she should so some such than that the their theirs them then there these
they this those through to too under until up very was we were what when where which while
who whom why with would you your yours
patient pt name date dob age sex male female man woman dr mr mrs ms mx prof doctor professor
nurse miss md rn np pa do phd dds mph mbbs facs facp hospital clinic center centre medical
medicine department dept service unit emergency room ward icu er ed or assessment plan history
exam examination diagnosis diagnoses impression findings report discharge admission summary
note notes progress follow signed electronically dictated transcribed reviewed seen called
spoke contact today yesterday tomorrow tonight morning afternoon evening night denies reports
reported presents presented complains states stated noted admitted discharged returned
monday tuesday wednesday thursday friday saturday sunday january february march april may
june july august september october november december mg mcg ml daily bid tid qid prn po iv
im sc bp hr rr spo2 temp pulse weight height bmi labs lab vitals allergies allergy
medications medication meds hpi ros pmh psh fh sh cc chief complaint social family past
surgical physical general review systems neuro cardio pulm gi gu heent skin extremities
type disease syndrome cancer infection failure pain fever cough diabetes hypertension
mellitus chronic acute left right bilateral normal abnormal negative positive status post
mri ct xray x-ray ultrasound ecg ekg cbc bmp cmp covid no yes none unknown per via see also
inc llc ltd group team staff care health system university school street avenue road
mrn ssn acct account phone tel fax email address id
"""))


# ---------------------------------------------------------------------------------------
# Detectors: each yields (type, start, end) of the identifier itself (labels stay).

_EMAIL = re.compile(r"(?<![\w.+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}(?![\w\-])")
_URL = re.compile(r"(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>\"'()\[\]]+"
                  r"|\b[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.(?:com|org|net|edu|gov|io|health|info)"
                  r"(?:/[^\s<>\"'()\[\]]*)?\b")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                   r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_SSN = re.compile(r"(?<![\d\-])\d{3}([- ])\d{2}\1\d{4}(?![\d\-])")
_PHONE = re.compile(r"(?<![\w+])(?:\+?1[ .\-]?)?(?:\(\d{3}\)[ \t]*|\d{3}[ .\-])\d{3}[ .\-]\d{4}"
                    r"(?:[ \t]*(?:x|ext\.?|extension)[ \t]*\d{1,5})?(?![\w\-])"
                    r"|(?<![\w+])\+\d(?:[ .\-]?\d){7,14}(?![\w\-])")
_PHONE_LABEL = re.compile(r"(?i)\b(fax|facsimile|phone|tel|telephone|cell|mobile|pager|ph|home"
                          r"|work)\b|(?<![A-Za-z])(F|\(F\))[ \t]*[:#]")
_LABELLED_PHONE = re.compile(r"(?i)\b(?:phone|tel|telephone|cell|mobile|pager|fax|facsimile)"
                             r"(?:[ \t]+(?:number|no\.?|#))?[ \t]*[:#]?[ \t]*(\d{7,11})(?!\d)")

_ID_VALUE = r"((?=[A-Za-z\-]*\d)[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])(?![\w\-])"
_SUFFIX = r"[ \t]+(?:number|num\.?|no\.?|#|id)"
# Labels, by the type of the value after them. A strong label may be followed by its value
# after a space ("MRN 1234567"); a weak one, a common word too ("chart", "case", "policy"),
# needs a suffix or a separator ("chart #: 1234", "policy: AB123") so that "in this case
# 15 mg" keeps its dose.
_LABELS: dict[str, tuple[str, str]] = {
    "SSN": (r"ssn|ss#|social[ \t]+security(?:[ \t]+(?:number|no\.?|#))?", ""),
    "MRN": (r"mrn|mr[ \t]*#|mr[ \t]+(?:no\.?|number)|medical[ \t]+record(?:[ \t]+(?:number|no\.?"
            r"|#))?|med\.?[ \t]+rec\.?(?:[ \t]+(?:number|no\.?|#))?|(?:patient|pt\.?)[ \t]+id"
            r"|hospital[ \t]+(?:number|no\.?|#|id)",
            r"chart|unit"),
    "ACCOUNT": (r"acct\.?|account[ \t]+(?:number|no\.?|#)",
                r"account|billing|encounter|visit|fin|invoice|claim"),
    "HEALTH_PLAN": (r"hicn|mbi|(?:member|subscriber|insurance|beneficiary)[ \t]+(?:id|number"
                    r"|no\.?|#)|health[ \t]+plan[ \t]+(?:id|number|no\.?|#)",
                    r"policy|group|medicare|medicaid|health[ \t]+plan"),
    "VEHICLE": (r"vin", r"vehicle|vehicle[ \t]+identification"),
    "LICENSE": (r"dea|npi|dl[ \t]*#|(?:driver'?s[ \t]+)?licen[cs]e[ \t]+(?:number|no\.?|#)",
                r"(?:driver'?s[ \t]+)?licen[cs]e|certificate|cert\.?|passport"),
    "DEVICE": (r"s/n|udi|serial[ \t]+(?:number|no\.?|#)",
               r"serial|sn|device|implant"),
    "ID": (r"id|id[ \t]+(?:number|no\.?|#)|identifier|accession[ \t]+(?:number|no\.?|#)",
           r"identification|accession|case|specimen"),
}


def _labelled(strong: str, weak: str) -> re.Pattern:
    labels = [rf"(?:{strong})(?:{_SUFFIX}\.?)?(?![\w/])"] if strong else []
    if weak:
        labels.append(rf"(?:{weak})(?:{_SUFFIX}\.?(?![\w/])|(?=[ \t]*[:#]))")
    return re.compile(rf"(?i)(?<![\w/])(?:{'|'.join(labels)})[ \t]*[:#=\-]?[ \t]*"
                      rf"(?:is[ \t]+)?{_ID_VALUE}")


_LABELLED_RE = {t: _labelled(*labels) for t, labels in _LABELS.items()}
_PLATE = re.compile(r"(?i)\b(?:licen[cs]e[ \t]+)?plate(?:[ \t]+(?:number|no\.?|#))?"
                    r"[ \t]*[:#]?[ \t]*((?=[A-Z0-9 \-]*\d)[A-Z0-9]{1,4}[ \-][A-Z0-9]{1,4})"
                    r"(?![\w\-])")
_VIN = re.compile(r"(?<![A-Za-z0-9])(?=[A-HJ-NPR-Z0-9]*\d)(?=[A-HJ-NPR-Z0-9]*[A-HJ-NPR-Z])"
                  r"[A-HJ-NPR-Z0-9]{17}(?![A-Za-z0-9])")

_DATES = [
    re.compile(rf"(?i)\b{_MONTH}\.?[ \t]+{_DAY}(?:,?[ \t]+{_YEAR})?\b{_NOT_UNIT}"),
    re.compile(rf"(?i)\b{_DAY}(?:[ \t]+of)?[ \t]+{_MONTH}\.?(?:,?[ \t]+{_YEAR})?\b"),
    re.compile(rf"(?i)\b{_MONTH}\.?,?[ \t]+(?:19|20)\d{{2}}\b"),
    re.compile(rf"(?i)\b\d{{1,2}}[ \-]?{_MONTH}[ \-]?(?:(?:19|20)?\d{{2}})\b"),
    re.compile(r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)"),
]
_MONTH_RE = re.compile(rf"(?i)(?<![a-z]){_MONTH}(?![a-z])")
_NUMERIC_DATE = re.compile(r"(?<![\d./\-])(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})"
                           r"(?![\d/\-]|\.\d)")
_ISO_DATE = re.compile(r"(?<![\d./\-])((?:19|20)\d{2})([/.\-])(\d{1,2})\2(\d{1,2})"
                       r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?![\d/\-]|\.\d)")
_BIRTH_YEAR = re.compile(r"(?i)\b(?:dob|d\.o\.b\.?|date[ \t]+of[ \t]+birth|birth[ \t]*date"
                         r"|born(?:[ \t]+(?:on|in))?)[ \t]*[:\-]?[ \t]*((?:19|20)\d{2})\b")

_OLD_AGE = r"(9\d|1[0-4]\d)"
_AGES = [
    re.compile(rf"(?i)(?<![\d.]){_OLD_AGE}(?=[ \t]*-?[ \t]*(?:years?|yrs?|y\.?[ \t]?o\.?|y/o)"
               r"(?![a-z]))"),
    re.compile(rf"(?i)\b(?:age|aged)[ \t]*[:=]?[ \t]*(?:of[ \t]+)?{_OLD_AGE}(?!\d|\.\d)"),
    re.compile(r"(?i)\b((?:ninety|one[ \t]+hundred(?:[ \t]+and)?)(?:[ \t\-]+(?:one|two|three|four"
               r"|five|six|seven|eight|nine|ten))?)(?=[ \t\-]+years?[ \t\-]+old\b)"),
]

_ADDRESSES = [
    re.compile(rf"(?<![\w.])\d{{1,6}}[A-Za-z]?[ \t]+(?:(?:[NSEW]\.?|North|South|East|West)[ \t]+)?"
               rf"(?:{_STREET_WORD}[ \t]+){{0,3}}{_STREET_WORD}[ \t]+{_STREET_SUFFIX}\b\.?"
               rf"{_UNIT}?(?:,?[ \t]+{_CITY},?[ \t]+{_STATE}(?:[ \t]+{_ZIP})?\b)?"),
    re.compile(r"(?i)\bP\.?[ \t]?O\.?[ \t]*Box[ \t]+\d+\b"),
    re.compile(rf"\b{_CITY},[ \t]*(?:{'|'.join(_STATE_CODES)})[ \t]+{_ZIP}\b"),
]
_ADDRESS_LINE = re.compile(r"(?i)\b(?:home[ \t]+|mailing[ \t]+|street[ \t]+)?(?:address|addr\.?)"
                           r"[ \t]*:[ \t]*([^\n;]{3,120}?)(?=[ \t]*(?:\n|;|$)|\.[ \t]+[A-Z]|\.$)")
_LIVES_AT = re.compile(r"(?i)\b(?:lives|resides|living|residing)[ \t]+at[ \t]+(\d[^\n;]{2,100}?)"
                       r"(?=[ \t]*(?:\n|;|$)|[.,][ \t]+|\.$)")
_LOCATIONS = [
    re.compile(rf"\b(?i:lives|resides|living|residing|resident)[ \t]+(?i:in|of)[ \t]+({_CITY})"),
    re.compile(rf"\b({_CITY}),[ \t]*(?:{_STATE_NAMES})\b"),
]
_ZIPS = [
    re.compile(rf"\b(?:{'|'.join(_STATE_CODES)})[ \t]+({_ZIP})\b"),
    re.compile(rf"(?i)\bzip(?:[ \t]*code)?[ \t]*[:#]?[ \t]*({_ZIP})\b"),
]
_UNIT_AFTER = re.compile(r"(?i)[ \t]*(?:mg|mcg|g|kg|ml|l|units?|iu|%|cells|copies)\b")
_TOKEN_RUN = re.compile(r"(?<![\w.\-/])[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?![\w/]|[.\-]\w)")

# Between a label and its name: spaces, or one line break (wrapped text).
_GAP = r"(?:[ \t]+|[ \t]*\n[ \t]*)"
_NAMES_TITLE = re.compile(rf"(?<![\w.])(?:{_TITLE}){_GAP}({_NAME})")
# A colon label starts a line or follows punctuation: "Drug name: Lisinopril" is no name.
_NAMES_LABEL = re.compile(rf"(?<![\w.])(?<![A-Za-z][ \t])(?i:{_COLON_LABELS})[ \t]*:{_GAP}?"
                          rf"({_LAST_FIRST}|{_NAME})")
_NAMES_BY = re.compile(rf"(?<![\w.])(?i:{_BY_LABELS})[ \t]*:?{_GAP}?({_LAST_FIRST}|{_NAME})")
_NAMES_RELATIVE = re.compile(rf"(?<![\w.])(?i:{_RELATIVES})[ \t]*,?{_GAP}({_NAME})")
_NAMES_CREDENTIAL = re.compile(rf"(?<![\w.])({_NAME}),?[ \t]+{_CREDENTIAL}(?![\w])")
_NAMES_FIRST = re.compile(rf"(?<![\w.])([A-Z][a-z]+)"
                          rf"(?= {{1,2}}(?:{_INITIAL} {{0,2}})?({_TOKEN}))")
_LOW = r"[a-z][a-z'\-]+"
_LOWER_TITLE = re.compile(rf"(?<![\w.])(?:dr|doctor|mr|mister|mrs|missus|ms|miss|nurse)\.?[ \t]+"
                          rf"({_LOW}(?:[ \t]+{_LOW})?)")
_LOWER_LABEL = re.compile(rf"(?<![\w.])(?:patient[ \t]+name|name[ \t]+is|signed[ \t]+by"
                          rf"|dictated[ \t]+by|seen[ \t]+by)[ \t]*:?[ \t]+"
                          rf"({_LOW}(?:[ \t]+{_LOW})?)")
_LOWER_FIRST = re.compile(rf"(?<![\w.])({_LOW})(?=[ \t]+({_LOW})(?![\w]))")

# Detection order = overlap priority: an earlier detector's span wins over a later one's.
_RANK = {"EMAIL": 0, "URL": 1, "IP": 2, "SSN": 3, "LABELLED": 4, "PHONE": 5, "ADDRESS": 6,
         "DATE": 7, "AGE": 8, "NAME": 9, "LOCATION": 10, "ZIP": 10, "FIRST": 11, "ID": 12}


def _candidates(text: str, lower_mode: bool) -> Iterator[_Hit]:
    def hits(rx: re.Pattern, typ: str, rank: str, group: int = 0,
             check: Callable[[re.Match], bool] | None = None) -> Iterator[_Hit]:
        for m in rx.finditer(text):
            if m.group(group) and (check is None or check(m)):
                yield _Hit(typ, m.start(group), m.end(group), _RANK[rank])

    yield from hits(_EMAIL, "EMAIL", "EMAIL")
    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in ".,;:!?":
            end -= 1
        yield _Hit("URL", m.start(), end, _RANK["URL"])
    yield from hits(_IPV4, "IP", "IP")
    yield from hits(_IPV6, "IP", "IP", check=_is_ipv6)
    yield from hits(_SSN, "SSN", "SSN")
    for typ, rx in _LABELLED_RE.items():
        yield from hits(rx, typ, "LABELLED", 1)
    yield from hits(_PLATE, "VEHICLE", "LABELLED", 1)
    yield from hits(_VIN, "VEHICLE", "LABELLED")
    for m in _PHONE.finditer(text):
        yield _Hit(_phone_type(text, m.start()), m.start(), m.end(), _RANK["PHONE"])
    for m in _LABELLED_PHONE.finditer(text):
        yield _Hit(_phone_type(text, m.start(1)), m.start(1), m.end(1), _RANK["PHONE"])
    for rx in _ADDRESSES:
        yield from hits(rx, "ADDRESS", "ADDRESS")
    yield from hits(_ADDRESS_LINE, "ADDRESS", "ADDRESS", 1)
    yield from hits(_LIVES_AT, "ADDRESS", "ADDRESS", 1)
    for rx in _DATES:
        yield from hits(rx, "DATE", "DATE", check=lambda m: lower_mode or not _lower_month(m))
    yield from hits(_NUMERIC_DATE, "DATE", "DATE", check=_is_numeric_date)
    yield from hits(_ISO_DATE, "DATE", "DATE", check=_is_iso_date)
    yield from hits(_BIRTH_YEAR, "DATE", "DATE", 1)
    for rx in _AGES:
        yield from hits(rx, "AGE", "AGE", 1)
    yield from _names(text, lower_mode)
    for rx in _LOCATIONS:
        for m in rx.finditer(text):
            span = _trim_name(m, 1)
            if span:
                yield _Hit("LOCATION", *span, _RANK["LOCATION"])
    for rx in _ZIPS:
        yield from hits(rx, "ZIP", "ZIP", 1)
    yield from hits(_TOKEN_RUN, "ID", "ID", check=_is_id_like)


def _names(text: str, lower_mode: bool) -> Iterator[_Hit]:
    rank = _RANK["NAME"]
    if lower_mode:
        for rx in (_LOWER_TITLE, _LOWER_LABEL):
            for m in rx.finditer(text):
                # One word, or two when the first is a known first name ("john smith").
                words = m.group(1).split()
                if words[0] in STOP_WORDS:
                    continue
                two = len(words) > 1 and words[0] in FIRST_NAMES and words[1] not in STOP_WORDS
                yield _Hit("NAME", m.start(1), m.end(1) if two else m.start(1) + len(words[0]),
                           rank)
        for m in _LOWER_FIRST.finditer(text):
            if m.group(1) in FIRST_NAMES and m.group(2) not in STOP_WORDS:
                yield _Hit("NAME", m.start(1), m.end(2), _RANK["FIRST"])
        return
    for rx in (_NAMES_TITLE, _NAMES_LABEL, _NAMES_BY, _NAMES_RELATIVE, _NAMES_CREDENTIAL):
        for m in rx.finditer(text):
            span = _trim_name(m, 1)
            if span:
                yield _Hit("NAME", *span, rank)
    for m in _NAMES_FIRST.finditer(text):
        if m.group(1).lower() in FIRST_NAMES and m.group(2).lower() not in STOP_WORDS:
            yield _Hit("NAME", m.start(1), m.end(2), _RANK["FIRST"])


def _trim_name(m: re.Match, group: int) -> tuple[int, int] | None:
    """The span of group ``group`` without leading and trailing stop words, or None."""
    start, end = m.span(group)
    words = list(re.finditer(r"[^\s,]+", m.group(group)))
    while words and _is_stop(words[0].group()):
        words.pop(0)
    while words and _is_stop(words[-1].group()):
        words.pop()
    if not words or all(len(w.group().rstrip(".")) < 2 for w in words):
        return None
    return start + words[0].start(), start + words[-1].end()


def _is_stop(word: str) -> bool:
    return word.rstrip(".").lower() in STOP_WORDS


def _propagate_names(text: str, chosen: list[_Hit], lower_mode: bool) -> Iterator[_Hit]:
    words: set[str] = set()
    for h in chosen:
        if h.type == "NAME":
            for w in re.findall(r"[^\s,]+", text[h.start:h.end]):
                w = w.rstrip(".")
                if len(w) >= 2 and w.lower() not in STOP_WORDS:
                    words.add(w)
    if not words:
        return
    forms = {f for w in words for f in ((w,) if lower_mode else (w, w.upper(), w.capitalize()))}
    rx = re.compile(r"(?<![\w'’\-])(?:" + "|".join(map(re.escape, sorted(forms, key=len,
                                                                         reverse=True)))
                    + r")(?![\w’\-])")
    for m in rx.finditer(text):
        yield _Hit("NAME", m.start(), m.end(), _RANK["FIRST"])


def _resolve(hits: list[_Hit], chosen: list[_Hit]) -> list[_Hit]:
    """Add ``hits`` to ``chosen`` by priority (rank, then longest), skipping overlaps."""
    out = sorted(chosen, key=lambda h: h.start)
    starts = [h.start for h in out]
    order = {t: i for i, t in enumerate(TYPES)}
    for h in sorted(set(hits), key=lambda h: (h.rank, h.start - h.end, h.start, order[h.type])):
        i = bisect.bisect_left(starts, h.start)
        if h.end <= h.start or (i > 0 and out[i - 1].end > h.start) or (
                i < len(out) and out[i].start < h.end):
            continue
        out.insert(i, h)
        starts.insert(i, h.start)
    return out


def _phone_type(text: str, start: int) -> str:
    """FAX when the nearest label before the number (within 30 characters) says fax."""
    labels = list(_PHONE_LABEL.finditer(text[max(0, start - 30):start]))
    if labels:
        last = labels[-1]
        word = (last.group(1) or last.group(2) or "").lower()
        if word in ("fax", "facsimile", "f", "(f)"):
            return "FAX"
    return "PHONE"


def _is_ipv6(m: re.Match) -> bool:
    s = m.group()
    if "::" not in s and s.count(":") != 7:
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _is_numeric_date(m: re.Match) -> bool:
    a, b = int(m.group(1)), int(m.group(3))
    return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)


def _is_iso_date(m: re.Match) -> bool:
    return 1 <= int(m.group(3)) <= 12 and 1 <= int(m.group(4)) <= 31


def _lower_month(m: re.Match) -> bool:
    """True when the month name is written in lower case ("may 5", a verb): not a date
    outside lower-case mode."""
    month = _MONTH_RE.search(m.group())
    return bool(month) and month.group()[0].islower()


def _is_id_like(m: re.Match) -> bool:
    s = m.group()
    digits = sum(c.isdigit() for c in s)
    letters = sum(c.isalpha() for c in s)
    if letters == 0 and _UNIT_AFTER.match(m.string, m.end()):
        return False  # a quantity: "penicillin G 2400000 units"
    return digits >= 7 or (digits >= 5 and letters >= 1)
