"""Speech: transcribe medical dictation (CTC speech recognition from WAV)."""

from medml.tasks.speech.task import SpeechTask

__all__ = ["SpeechTask"]
