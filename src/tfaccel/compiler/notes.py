"""Which of the report's sentences are notes (what an option did) and which are fallbacks.

Why its own module: ``summary()`` and the HTML page both label the sentences, and the page module must not
import the report module it renders (the report offers ``to_html``). TF-free.
"""

from __future__ import annotations

__all__ = ["OPTION_NOTES", "sentence_kind"]

#: how the sentences on what an option did begin (the summary calls them notes, not fallbacks)
OPTION_NOTES = ("--quantize=", "--performance-hint=", "--nan-semantics=")


def sentence_kind(sentence: str) -> str:
    """``note`` for what an option did (the sentence names the option), ``fallback`` for the rest."""
    return "note" if sentence.startswith(OPTION_NOTES) else "fallback"
