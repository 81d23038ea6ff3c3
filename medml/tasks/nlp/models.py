"""NER taggers: a BiLSTM-CRF with character CNN features (trained from scratch, the
default) and a transformer token classifier fine-tuned from a local Hugging Face
checkpoint. Both take words (strings) and return IOB2 tag indices, so the task, the
trainer and the pyfunc never see a vocabulary or a tokenizer.

Self-contained weights: what a model needs besides its constructor arguments (the word
and character vocabularies; the tokenizer files) is packed as a zip into a ``uint8``
buffer, ``assets``, so that it travels in the ``state_dict`` (hence in the bundle the
shared trainer writes) rather than in the spec (logged as an MLflow parameter, limited to
6000 characters). ``rebuild_model(spec)`` makes the buffer at the right size; loading the
state dict fills it; the vocabulary or tokenizer is then read from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medml.errors import BadInputError

# assets made by build_model in this process, by sha256: rebuild_model(spec) in the same
# process (the shared trainer) finds them here; elsewhere the state dict brings them.
_ASSETS: dict[str, bytes] = {}
MAX_CHARS_PER_WORD = 24
DIGITS = re.compile(r"\d")


def pack(files: dict[str, bytes]) -> bytes:
    """Files as deterministic zip bytes (fixed timestamps, sorted)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            z.writestr(info, files[name])
    return buf.getvalue()


def unpack(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def register_assets(data: bytes) -> dict[str, Any]:
    """Keep ``data`` for ``rebuild_model`` in this process; the spec fields naming it."""
    sha = hashlib.sha256(data).hexdigest()
    _ASSETS[sha] = data
    return {"assets_sha256": sha, "assets_size": len(data)}


class _WithAssets(nn.Module):
    """A module whose extra files live in the ``assets`` buffer (see the module docstring)."""

    def _init_assets(self, size: int, sha: str | None) -> None:
        data = _ASSETS.get(sha or "")
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).clone() if data
               else torch.zeros(size, dtype=torch.uint8))
        self.register_buffer("assets", buf)
        self._loaded: Any = None
        self.register_load_state_dict_post_hook(lambda module, keys: module._forget())

    def _forget(self) -> None:
        self._loaded = None

    def files(self) -> dict[str, bytes]:
        data = bytes(self.assets.cpu().numpy().tobytes())
        if not data.strip(b"\x00"):
            raise BadInputError("model assets are empty: load the model's state dict "
                                "(its bundle) before using it")
        return unpack(data)


# ---------------------------------------------------------------- BiLSTM-CRF
def normalise_word(w: str) -> str:
    return DIGITS.sub("0", w.lower())


class BiLstmCrf(_WithAssets):
    """Word embeddings + a character CNN per word -> BiLSTM -> linear emissions -> CRF
    (pytorch-crf) over IOB2 tags. Words are lower-cased with digits as 0; the character
    CNN sees them as written (case, digits, affixes)."""

    def __init__(self, tags: list[str], assets_size: int, assets_sha256: str | None = None,
                 word_dim: int = 100, char_dim: int = 30, char_filters: int = 50,
                 char_kernel: int = 3, hidden: int = 200, layers: int = 1,
                 dropout: float = 0.5, word_dropout: float = 0.05, n_words: int = 2,
                 n_chars: int = 2) -> None:
        super().__init__()
        from torchcrf import CRF

        self.tags = list(tags)
        self.word_dropout = word_dropout
        self._init_assets(assets_size, assets_sha256)
        self.words = nn.Embedding(n_words, word_dim, padding_idx=0)
        self.chars = nn.Embedding(n_chars, char_dim, padding_idx=0)
        self.char_cnn = nn.Conv1d(char_dim, char_filters, char_kernel,
                                  padding=char_kernel // 2)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(word_dim + char_filters, hidden // 2, num_layers=layers,
                            bidirectional=True, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(hidden, len(tags))
        self.crf = CRF(len(tags), batch_first=True)

    def _vocab(self) -> tuple[dict[str, int], dict[str, int]]:
        if self._loaded is None:
            v = json.loads(self.files()["vocab.json"])
            self._loaded = ({w: i for i, w in enumerate(v["words"])},
                            {c: i for i, c in enumerate(v["chars"])})
        return self._loaded

    def encode(self, batch: list[list[str]], device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Word ids (B, T), character ids (B, T, C) and the mask (B, T)."""
        words, chars = self._vocab()
        t = max(len(s) for s in batch)
        c = min(MAX_CHARS_PER_WORD, max(len(w) for s in batch for w in s))
        w_ids = torch.zeros(len(batch), t, dtype=torch.long)
        c_ids = torch.zeros(len(batch), t, c, dtype=torch.long)
        mask = torch.zeros(len(batch), t, dtype=torch.bool)
        for i, sent in enumerate(batch):
            mask[i, :len(sent)] = True
            w_ids[i, :len(sent)] = torch.tensor([words.get(normalise_word(w), 1) for w in sent])
            for j, w in enumerate(sent):
                cs = [chars.get(ch, 1) for ch in w[:c]]
                c_ids[i, j, :len(cs)] = torch.tensor(cs)
        return w_ids.to(device), c_ids.to(device), mask.to(device)

    def emissions(self, batch: list[list[str]], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        w_ids, c_ids, mask = self.encode(batch, device)
        if self.training and self.word_dropout:
            drop = (torch.rand(w_ids.shape, device=device) < self.word_dropout) & mask
            w_ids = w_ids.masked_fill(drop, 1)
        b, t, c = c_ids.shape
        ch = self.chars(c_ids.view(b * t, c)).transpose(1, 2)  # (B*T, D, C)
        ch = torch.relu(self.char_cnn(ch)).max(dim=2).values.view(b, t, -1)
        x = self.drop(torch.cat([self.words(w_ids), ch], dim=-1))
        lengths = mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                   enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=t)
        return self.out(self.drop(h)), mask

    def loss(self, batch: list[list[str]], tags: list[list[int]], device: torch.device
             ) -> torch.Tensor:
        em, mask = self.emissions(batch, device)
        y = torch.zeros(mask.shape, dtype=torch.long, device=device)
        for i, t in enumerate(tags):
            y[i, :len(t)] = torch.tensor(t, device=device)
        return -self.crf(em.float(), y, mask=mask, reduction="mean")

    @torch.no_grad()
    def decode(self, batch: list[list[str]], device: torch.device
               ) -> tuple[list[list[int]], list[list[float]]]:
        """Viterbi tag indices per word, and a per-word confidence (the softmax of the
        emission scores at the chosen tag: pytorch-crf gives no marginals)."""
        em, mask = self.emissions(batch, device)
        paths = self.crf.decode(em.float(), mask=mask)
        prob = torch.softmax(em.float(), -1)
        conf = [[float(prob[i, j, k]) for j, k in enumerate(p)] for i, p in enumerate(paths)]
        return paths, conf

    def forward(self, batch: list[list[str]], tags: list[list[int]] | None = None
                ) -> torch.Tensor:
        """The training loss with ``tags`` (through ``forward``, so that a DDP wrapper
        syncs gradients), else the emission scores."""
        device = self.out.weight.device
        if tags is not None:
            return self.loss(batch, tags, device)
        return self.emissions(batch, device)[0]


def bilstm_assets(train_words: list[list[str]], min_count: int = 1) -> bytes:
    """The vocabularies (words seen ``min_count`` times in train, every character)."""
    from collections import Counter

    counts = Counter(normalise_word(w) for s in train_words for w in s)
    chars = Counter(ch for s in train_words for w in s for ch in w)
    vocab = {"words": ["<pad>", "<unk>"] + sorted(w for w, n in counts.items() if n >= min_count),
             "chars": ["<pad>", "<unk>"] + sorted(chars)}
    return pack({"vocab.json": json.dumps(vocab, ensure_ascii=False).encode()})


# ---------------------------------------------------------------- transformer
TOKENIZER_FILES = re.compile(r"^(tokenizer.*|vocab\..*|merges\.txt|special_tokens_map\.json|"
                             r"added_tokens\.json|spiece\.model|sentencepiece.*\.model)$")


def transformer_assets(checkpoint: Path) -> bytes:
    """The tokenizer files of a local checkpoint directory."""
    files = {p.name: p.read_bytes() for p in Path(checkpoint).iterdir()
             if p.is_file() and TOKENIZER_FILES.match(p.name)}
    if not files:
        raise BadInputError(f"{checkpoint}: no tokenizer files (tokenizer.json, vocab.txt...) "
                            "in this checkpoint directory; save the tokenizer with the model")
    return pack(files)


def checkpoint_config(checkpoint: Path, num_labels: int) -> dict[str, Any]:
    """The architecture of a local checkpoint, as a small dict for the spec."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(str(checkpoint), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{checkpoint}: not a Hugging Face checkpoint directory "
                            f"({str(exc).splitlines()[0][:120]}); give the folder with "
                            "config.json") from None
    d = cfg.to_diff_dict()
    d["model_type"] = cfg.model_type
    for k in ("id2label", "label2id", "architectures", "_name_or_path", "transformers_version",
              "num_labels"):
        d.pop(k, None)
    return d


class TransformerTagger(_WithAssets):
    """A token classifier (``AutoModelForTokenClassification``) over words: each word's
    first sub-word carries its tag; long texts are cut into windows of at most
    ``max_length`` sub-words at word boundaries."""

    def __init__(self, tags: list[str], config: dict[str, Any], assets_size: int,
                 assets_sha256: str | None = None, max_length: int = 256,
                 checkpoint: str | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForTokenClassification

        self.tags = list(tags)
        self.max_length = max_length
        self._init_assets(assets_size, assets_sha256)
        cfg = dict(config)
        cfg = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        cfg.num_labels = len(tags)
        cfg.id2label = dict(enumerate(tags))
        cfg.label2id = {t: i for i, t in enumerate(tags)}
        if checkpoint and Path(checkpoint).is_dir():
            # fine-tuning starts from the checkpoint's weights (the shared trainer builds
            # the model from the spec); a reload overwrites them with the state dict
            self.net = AutoModelForTokenClassification.from_pretrained(
                checkpoint, config=cfg, local_files_only=True)
        else:
            self.net = AutoModelForTokenClassification.from_config(cfg)

    def tokenizer(self) -> Any:
        if self._loaded is None:
            from transformers import AutoTokenizer

            with tempfile.TemporaryDirectory(prefix="medml-tok-") as tmp:
                for name, data in self.files().items():
                    (Path(tmp) / name).write_bytes(data)
                tok = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
            if not getattr(tok, "is_fast", True):
                raise BadInputError("the checkpoint's tokenizer is not a fast tokenizer "
                                    "(tokenizer.json); save it with a fast tokenizer")
            # BERT-family framing: [CLS] ... [SEP] (RoBERTa-like: <s> ... </s>)
            first = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
            last = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
            self._loaded = (tok, [first] if first is not None else [],
                            [last] if last is not None else [])
        return self._loaded

    def windows(self, batch: list[list[str]]) -> list[tuple[int, list[int], list[int]]]:
        """``(document, sub-word ids with specials, first-sub-word positions per word)`` per
        window; every word is in one window."""
        tok, prefix, suffix = self.tokenizer()
        lead, room = len(prefix), self.max_length - len(prefix) - len(suffix)
        enc = tok(batch, is_split_into_words=True, add_special_tokens=False)
        out = []
        for d in range(len(batch)):
            ids, wids = enc["input_ids"][d], enc.word_ids(d)
            per_word: list[list[int]] = [[] for _ in batch[d]]
            for pos, w in enumerate(wids):
                if w is not None:
                    per_word[w].append(ids[pos])
            cur: list[int] = []
            cur_first: list[int] = []
            for pieces in per_word:
                pieces = pieces[:room] or [tok.unk_token_id]  # a word with no sub-word
                if cur and len(cur) + len(pieces) > room:
                    out.append((d, prefix + cur + suffix, cur_first))
                    cur, cur_first = [], []
                cur_first.append(lead + len(cur))
                cur += pieces
            out.append((d, prefix + cur + suffix, cur_first))
        return out

    def _logits(self, wins: list[tuple[int, list[int], list[int]]], device: torch.device
                ) -> torch.Tensor:
        tok = self.tokenizer()[0]
        t = max(len(ids) for _, ids, _ in wins)
        pad = tok.pad_token_id or 0
        ids = torch.full((len(wins), t), pad, dtype=torch.long)
        att = torch.zeros(len(wins), t, dtype=torch.long)
        for i, (_, x, _) in enumerate(wins):
            ids[i, :len(x)] = torch.tensor(x)
            att[i, :len(x)] = 1
        return self.net(input_ids=ids.to(device), attention_mask=att.to(device)).logits

    def loss(self, batch: list[list[str]], tags: list[list[int]], device: torch.device
             ) -> torch.Tensor:
        wins = self.windows(batch)
        logits = self._logits(wins, device)
        y = torch.full(logits.shape[:2], -100, dtype=torch.long)
        offset = [0] * len(batch)
        for i, (d, _, firsts) in enumerate(wins):
            for k, pos in enumerate(firsts):
                y[i, pos] = tags[d][offset[d] + k]
            offset[d] += len(firsts)
        return nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]),
                                           y.view(-1).to(device), ignore_index=-100)

    @torch.no_grad()
    def decode(self, batch: list[list[str]], device: torch.device
               ) -> tuple[list[list[int]], list[list[float]]]:
        """Arg-max tag index per word (its first sub-word) and its softmax probability."""
        wins = self.windows(batch)
        paths: list[list[int]] = [[] for _ in batch]
        conf: list[list[float]] = [[] for _ in batch]
        for i in range(0, len(wins), 16):
            chunk = wins[i:i + 16]
            prob = torch.softmax(self._logits(chunk, device).float(), -1).cpu()
            for j, (d, _, firsts) in enumerate(chunk):
                p, k = prob[j, firsts].max(-1)
                paths[d] += k.tolist()
                conf[d] += p.tolist()
        return paths, conf

    def forward(self, batch: list[list[str]], tags: list[list[int]] | None = None
                ) -> torch.Tensor:
        """The training loss with ``tags``, else the logits per window."""
        device = next(self.parameters()).device
        if tags is not None:
            return self.loss(batch, tags, device)
        return self._logits(self.windows(batch), device)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "bilstm_crf": BiLstmCrf,
    "transformer": TransformerTagger,
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """The tagger ``name`` from the registry of known NLP models."""
    if name not in MODELS:
        raise BadInputError(f"unknown nlp model {name!r}; choose one of: "
                            f"{', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise BadInputError(f"nlp model {name!r}: bad model_args ({exc})") from exc
