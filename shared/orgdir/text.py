"""Danish text folding, once for every service.

``fold`` is the search key: two spellings of one name fold to the same key, so
search is insensitive to case, accents and the Danish (and German) spelling
variants, both ways — æ/ä ↔ ae ↔ a, ø/ö ↔ oe ↔ o, å ↔ aa ↔ a, ü ↔ ue ↔ u,
é → e, ß → ss — and to runs of white space::

    fold("Østergård") == fold("Østergaard") == fold("oestergaard") == fold("ostergaard") == "ostergard"

It is a key, not a spelling: it is only for comparing (index and query are
folded alike), never shown. A fold is not stored anywhere; indexes built on it
are rebuilt in memory when a replica loads.

``spell_out`` is the ASCII spelling a person would type for a name (Ø → oe,
Å → aa, Æ → ae, accents dropped), used where one readable form is needed,
such as generated usernames.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["fold", "spell_out"]

_SPELLED = str.maketrans({"æ": "ae", "ø": "oe", "å": "aa", "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
# The written-out forms (and the plain vowel) collapse to the plain vowel: aa, ae → a; oe → o; ue → u.
# Greedy, so the result has no such pair left and folding is idempotent.
_PAIRS = re.compile(r"a[ae]+|oe+|ue+")


def spell_out(text: str) -> str:
    """Lower case, Danish and German letters written out (æ→ae, ø→oe, å→aa, ä→ae, ö→oe, ü→ue, ß→ss),
    other accents dropped (é→e). White space and punctuation are kept."""
    low = unicodedata.normalize("NFKC", text).casefold().translate(_SPELLED)
    return "".join(c for c in unicodedata.normalize("NFKD", low) if not unicodedata.combining(c))


def fold(text: str) -> str:
    """The search key of ``text``: spelt out, the vowel pairs collapsed, white space single and trimmed."""
    return " ".join(_PAIRS.sub(lambda m: m.group()[0], spell_out(text)).split())
