"""Translation task package; importing it registers `translation`."""

from tasks.translation.task import TranslationTask

__all__ = ["TranslationTask"]
