"""Short public report references that are easy to read out over the phone.

A reference is the city code, a dash and five characters, e.g. ``PP-7K3Q9``.
The characters come from Crockford's base32 alphabet (no I, L, O or U, so
nothing is confused when spoken or hand-written) and encode a number from the
``report_reference_seq`` sequence, scrambled by an odd multiplier modulo 32⁵
so consecutive reports do not get consecutive-looking references. The map is
a bijection, so references never collide and never need a retry. Past 32⁵
(about 33.5 million reports) they grow to seven characters the same way.
"""

from __future__ import annotations

import re

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SHORT = 32**5
_LONG = 32**7
_MULTIPLIER = 0x9E3779B1 | 1  # odd, so invertible modulo any power of two
_OFFSET = 0x2545F49


def _encode(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 32)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def reference_for(city_code: str, sequence_number: int) -> str:
    """The reference for the n-th report (n from the database sequence, starting at 1)."""
    if sequence_number < 1:
        raise ValueError("sequence numbers start at 1")
    n = sequence_number - 1
    if n < _SHORT:
        return f"{city_code}-{_encode((n * _MULTIPLIER + _OFFSET) % _SHORT, 5)}"
    n -= _SHORT
    if n >= _LONG:
        raise OverflowError("reference space exhausted")
    return f"{city_code}-{_encode((n * _MULTIPLIER + _OFFSET) % _LONG, 7)}"


def normalise_reference(text: str) -> str:
    """Accept what people type: any case, spaces, and the look-alikes O→0, I/L→1."""
    cleaned = text.strip().upper()
    # "PP 58QT9": a space where the dash goes (the city prefix is letters only).
    cleaned = re.sub(r"^([A-Z]{2,4})\s+(?=[0-9A-Z])", r"\1-", cleaned).replace(" ", "")
    if "-" not in cleaned:
        return cleaned
    prefix, _, body = cleaned.partition("-")
    return prefix + "-" + body.translate(str.maketrans({"O": "0", "I": "1", "L": "1"}))
