"""Speech synthesis with eSpeak NG, without root: the ``espeakng-loader`` package ships
``libespeak-ng.so`` and its data; it is driven here with ctypes (synchronous output, the
samples handed to a callback). eSpeak NG is a formant synthesiser: robotic, but fast
(hundreds of times real time on one core) and with many voices, accents, rates and
pitches, which is what demo dictation needs."""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from medml.errors import BadInputError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)


class ESpeak:
    """One eSpeak NG engine per process (the library keeps global state)."""

    _instance: ESpeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - a project dependency
            raise BadInputError("speech demo data needs the espeakng-loader package; "
                                "install the project's dependencies") from exc
        self.lib = ctypes.cdll.LoadLibrary(str(espeakng_loader.get_library_path()))
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(espeakng_loader.get_data_path()).encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events) -> int:  # noqa: ARG001 - the C signature
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # kept referenced: C holds a pointer to it
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> ESpeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def synth(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
              pitch_range: int = 50) -> np.ndarray:
        """``text`` spoken by ``voice`` (e.g. ``en-us+f3``) at ``rate`` words per minute and
        ``pitch`` (0-100) as float32 samples at ``self.sample_rate`` Hz."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise BadInputError(f"eSpeak NG has no voice {voice!r}")
            for p, v in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range),
                         (_VOLUME, 100)):
                self.lib.espeak_SetParameter(p, int(v), 0)
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data)
            self._chunks = []
            self.lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, 0, None, None)
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        x = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return x.astype(np.float32) / 32768.0
