"""Money-like numbers in phone-call transcripts, digits and spoken forms, with what each one is.

Speech-to-text hands us "one fifty", "a buck fifty", "two grand", "$95 an hour" and also "at 3", "123 Main
St", "2019" and "2 hours". The negotiation logic (offline.py) only wants the numbers that can be prices, so
this module finds every number, parses its value and says what kind of number it is. It knows nothing about
who said what: that is the negotiation layer's job.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum

logger = logging.getLogger(__name__)

__all__ = ["Mention", "MentionKind", "find_mentions", "parse_spoken_number"]


class MentionKind(StrEnum):
    PRICE = "price"  # marked as money ("$150", "150 bucks", "two grand") or in a money frame
    HOURLY = "hourly"  # "$95 an hour"
    FEE = "fee"  # call-out, diagnostic, trip or visit fee: "$79 to come out"
    NUMBER = "number"  # a bare number that may be a price ("how about 140?")
    # Not prices:
    TIME = "time"
    DATE = "date"
    ADDRESS = "address"
    YEAR = "year"
    DURATION = "duration"
    PERCENT = "percent"
    PHONE = "phone"
    ZIP = "zip"
    COUNT = "count"  # "2 bathrooms", "one more thing"
    MEASURE = "measure"  # "75,000 miles", "6 feet"
    DELTA = "delta"  # a difference, not a price: "$50 off", "another 20", "100 more"
    ORDINAL = "ordinal"


PRICE_LIKE = frozenset({MentionKind.PRICE, MentionKind.HOURLY, MentionKind.FEE, MentionKind.NUMBER})


@dataclass(frozen=True, slots=True)
class Mention:
    """One number found in a text. `start`/`end` index the original string."""

    value: float
    start: int
    end: int
    text: str
    kind: MentionKind
    money: bool  # carried an explicit money marker ($, dollars, bucks, grand, k)

    @property
    def is_price_like(self) -> bool:
        return self.kind in PRICE_LIKE


# ---------------------------------------------------------------------------------------------------------
# Tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<thousands>\b\d{1,3},\s000\b)
  | (?P<phone>\(\d{3}\)\s?\d{3}[-.\s]\d{4}\b|\b\d{3}[-.\s]\d{3}[-.\s]\d{4}\b|\b\d{3}-\d{4}\b)
  | (?P<date>\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b)
  | (?P<clock>\b\d{1,2}:\d{2}\b)
  | (?P<code>\b[A-Za-z]+\d[A-Za-z\d]*\b   # model numbers and codes: "E350", "v6", "3.5L", "iPhone7"
      |\b\d+(?:\.\d+)?(?!(?:k|st|nd|rd|th|am|pm|s|ish|hrs?|mins?|yrs?|mo|x|ft|lbs?|gb|mph|mi|km|sec|m)\b)
        [A-Za-z]+[A-Za-z\d]*\b)
  | (?P<num>\d+(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?P<suffix>[kK]\b|(?:st|nd|rd|th)\b)?
  | (?P<word>[A-Za-z]+(?:'[A-Za-z]+)?)
  | (?P<punct>[^\sA-Za-z\d])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # phone | date | clock | num | word | punct
    text: str
    low: str
    start: int
    end: int
    suffix: str = ""


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup or "punct"
        if kind == "suffix":
            kind = "num"
        suffix = (m.group("suffix") or "").lower()
        body = m.group(kind) if kind != "num" else m.group("num")
        toks.append(_Tok(kind, body, body.lower(), m.start(), m.end(), suffix))
    return toks


# ---------------------------------------------------------------------------------------------------------
# Spoken number words

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_NUMBER_WORDS = {**_UNITS, **_TEENS, **_TENS}
_MONEY_WORDS = {"dollar", "dollars", "buck", "bucks", "usd", "bux"}
_SCALE_THOUSAND = {"thousand", "grand", "k"}


def _is_num_word(tok: _Tok) -> bool:
    return tok.kind == "word" and tok.low in _NUMBER_WORDS


class _Cursor:
    """Walks word tokens, skipping hyphens between number words ("seventy-five")."""

    def __init__(self, toks: list[_Tok], i: int) -> None:
        self.toks = toks
        self.i = i
        self.first = i

    def peek(self, ahead: int = 0) -> _Tok | None:
        j = self.i
        seen = 0
        while j < len(self.toks):
            tok = self.toks[j]
            if tok.kind == "punct" and tok.text == "-" and j > self.first:
                j += 1
                continue
            if seen == ahead:
                return tok
            seen += 1
            j += 1
        return None

    def take(self) -> _Tok:
        tok = self.peek()
        assert tok is not None
        while self.toks[self.i] is not tok:
            self.i += 1
        self.i += 1
        return tok

    def low(self, ahead: int = 0) -> str:
        tok = self.peek(ahead)
        return tok.low if tok is not None and tok.kind == "word" else ""


def _small(cur: _Cursor) -> int | None:
    """1..99 in words: "seven", "fifteen", "seventy five"."""
    word = cur.low()
    if word in _TENS:
        cur.take()
        value = _TENS[word]
        if cur.low() in _UNITS and cur.low() != "zero":
            value += _UNITS[cur.take().low]
        return value
    if word in _TEENS or word in _UNITS:
        cur.take()
        return _NUMBER_WORDS[word]
    return None


def _two_digit(cur: _Cursor) -> int | None:
    """The second half of a colloquial price: "fifty", "twenty-five", "oh five", "fifteen" (not "five")."""
    word = cur.low()
    if word in ("oh", "o") and cur.low(1) in _UNITS:
        cur.take()
        return _UNITS[cur.take().low]
    if word in _TENS or word in _TEENS:
        return _small(cur)
    return None


def _hundreds(cur: _Cursor, lead: int | None) -> int | None:
    """[small] hundred [and] [small], with `lead` the already-read small number (or None for "a")."""
    if cur.low() != "hundred":
        return lead
    cur.take()
    value = (lead if lead is not None else 1) * 100
    save = cur.i
    if cur.low() == "and":
        cur.take()
    rest = _small(cur)
    if rest is None:
        cur.i = save
        return value
    return value + rest


@dataclass(frozen=True, slots=True)
class _Parsed:
    value: float
    end_tok: int  # index after the last token used
    colloquial: bool  # "one fifty", "ninety-nine ninety-nine"
    money: bool
    words: bool


def _parse_words(toks: list[_Tok], i: int) -> _Parsed | None:
    cur = _Cursor(toks, i)
    word = cur.low()
    money = False
    if word in ("a", "an"):
        nxt = cur.low(1)
        if nxt == "hundred":
            cur.take()
            value: float | None = _hundreds(cur, None)
        elif nxt in ("thousand", "grand"):
            cur.take()
            cur.take()
            return _finish_thousands(cur, 1000.0, money=nxt == "grand")
        elif nxt in ("buck", "dollar"):
            cur.take()
            cur.take()
            cents = _two_digit(cur)
            value = 1 + cents / 100 if cents is not None else 1.0
            return _Parsed(value, cur.i, cents is None, True, True)
        elif nxt == "couple" and cur.low(2) in ("hundred", "thousand", "grand"):
            cur.take()
            cur.take()
            scale = cur.take().low
            value = 200.0 if scale == "hundred" else 2000.0
            return _Parsed(value, cur.i, False, scale == "grand", True)
        else:
            return None
    else:
        lead = _small(cur)
        if lead is None:
            return None
        if cur.low() == "hundred":
            value = _hundreds(cur, lead)
        else:
            # "one fifty" = 150, "twelve fifty" = 1250, but "forty-nine ninety-five" = 49.95.
            save = cur.i
            second = _two_digit(cur)
            if second is not None and cur.low() != "hundred":
                if lead >= 20 and second >= 10:
                    return _Parsed(lead + second / 100, cur.i, True, money, True)
                if lead < 20:
                    return _Parsed(float(lead * 100 + second), cur.i, True, money, True)
            cur.i = save
            value = float(lead)
    if value is None:
        return None
    if cur.low() in _SCALE_THOUSAND:
        scale = cur.take().low
        return _finish_thousands(cur, value * 1000, money=scale in ("grand", "k"))
    return _Parsed(float(value), cur.i, False, money, True)


def _finish_thousands(cur: _Cursor, value: float, *, money: bool) -> _Parsed:
    save = cur.i
    if cur.low() == "and":
        cur.take()
    lead = _small(cur)
    if lead is not None:
        rest = _hundreds(cur, lead)
        return _Parsed(value + float(rest or 0), cur.i, False, money, True)
    if cur.low() in ("a", "one") and cur.low(1) == "hundred":
        cur.take()
        rest = _hundreds(cur, 1)
        return _Parsed(value + float(rest or 0), cur.i, False, money, True)
    cur.i = save
    return _Parsed(value, cur.i, False, money, True)


def parse_spoken_number(text: str) -> float | None:
    """The value of a whole amount phrase ("a hundred and twenty five", "one fifty", "150 bucks"), else None."""
    phrase = text.strip().rstrip(".!?,")
    mentions = find_mentions(phrase)
    if len(mentions) != 1 or mentions[0].start != 0 or mentions[0].end != len(phrase):
        return None
    return mentions[0].value


def _num_value(tok: _Tok) -> float:
    value = float(tok.text.replace(",", ""))
    if tok.suffix == "k":
        value *= 1000
    return value


# ---------------------------------------------------------------------------------------------------------
# Context rules

_TIME_PREPS = {"at", "by", "around", "until", "till", "til", "before", "after", "from", "between"}
_TIME_AFTER = {"am", "pm", "a.m", "p.m", "o'clock", "oclock", "tonight", "tomorrow", "today", "sharp", "ish"}
_DURATION_UNITS = {
    "second", "seconds", "sec", "secs", "minute", "minutes", "min", "mins", "hour", "hours", "hr", "hrs",
    "day", "days", "week", "weeks", "wk", "wks", "month", "months", "year", "years", "yr", "yrs", "night",
    "nights", "weekend", "weekends",
}  # fmt: skip
_MEASURE_UNITS = {
    "mile", "miles", "mi", "km", "kilometers", "foot", "feet", "ft", "inch", "inches", "sq", "square",
    "gallon", "gallons", "gal", "lb", "lbs", "pound", "pounds", "kg", "gb", "gig", "gigs", "tb", "mb", "mph",
    "amp", "amps", "volt", "volts", "watt", "watts", "btu", "ton", "tons", "meter", "meters", "yard", "yards",
    "mpg", "degrees", "degree", "psi", "cc", "hp", "horsepower", "mm", "cm", "liter", "liters", "oz", "ounces",
}  # fmt: skip
_COUNT_NOUNS = {
    "bathroom", "bathrooms", "bath", "baths", "bedroom", "bedrooms", "bed", "beds", "br", "bd", "room", "rooms",
    "toilet", "toilets", "sink", "sinks", "faucet", "faucets", "window", "windows", "door", "doors", "floor",
    "floors", "story", "stories", "storey", "level", "levels", "unit", "units", "people", "person", "kids",
    "children", "dogs", "cats", "pets", "car", "cars", "garage", "outlets", "outlet", "lights", "light",
    "fixtures", "fixture", "appliances", "pipes", "pipe", "drains", "drain", "locks", "lock", "keys", "key",
    "tires", "tire", "trees", "tree", "guys", "techs", "technicians", "men", "workers", "times", "time",
    "things", "thing", "items", "item", "pieces", "piece", "of", "seats", "seater", "owner", "owners",
    "drawer", "drawers", "chairs", "chair", "spots", "spot", "stalls", "panels", "vents", "ducts", "zones",
    "quotes", "quote", "calls", "rows", "row", "speed", "speeds", "wheels", "wheel", "bids", "estimates",
    "more", "other", "others", "cases", "case", "pairs",
    "pair", "boxes", "box", "bags", "copies", "shelves", "cabinets", "cabinet", "steps", "stairs", "walls",
    "wall", "coats", "coat", "layers", "visits", "trips", "jobs", "job", "bikes", "bike", "phones", "tvs",
}  # fmt: skip
_STREET_WORDS = {
    "st", "street", "ave", "avenue", "av", "rd", "road", "blvd", "boulevard", "ln", "lane", "dr", "drive", "ct",
    "court", "way", "pl", "place", "ter", "terrace", "cir", "circle", "hwy", "highway", "pkwy", "parkway", "pike",
    "trail", "trl", "loop", "sq", "square", "north", "south", "east", "west", "n", "s", "e", "w",
}  # fmt: skip
_ADDRESS_BEFORE = {"apartment", "apt", "unit", "suite", "ste", "number", "no", "#", "room", "building", "lot"}
_HOURLY_AFTER = ("an hour", "a hour", "per hour", "an hr", "per hr", "/hr", "/hour", "/ hr", "/ hour",
                 "hourly", "each hour", "every hour", "for each hour", "for every hour", "for the first hour",
                 "the hour", "a man hour", "per man hour")  # fmt: skip
_HOURLY_BEFORE = re.compile(r"\b(hourly|per hour|an hour|labor rate|rate is|rate of)\b[^.?!]{0,15}$")
_FEE_WORDS = re.compile(
    r"(call[- ]?out|service call|service fee|trip (?:charge|fee)|diagnos\w*|inspection|visit|dispatch|"
    r"come out|coming out|to come by|just to (?:look|come)|take a look|to look at it|assessment|evaluation|"
    r"show up|truck (?:fee|charge)|travel (?:fee|charge)|minimum charge|consultation)"
)
_DELTA_AFTER = {"off", "more", "less", "extra", "cheaper", "lower", "higher", "discount", "difference",
                "short", "over", "under", "above", "below", "back", "knocked"}  # fmt: skip
_DELTA_BEFORE = {"another", "extra", "additional", "knock", "knocked", "off", "save", "saves", "saving",
                 "discount", "by", "up", "down"}  # fmt: skip
_MONTHS = {"jan", "january", "feb", "february", "mar", "march", "apr", "april", "may", "jun", "june", "jul",
           "july", "aug", "august", "sep", "sept", "september", "oct", "october", "nov", "november", "dec",
           "december"}  # fmt: skip
_YEAR_BEFORE = {"in", "since", "from", "model", "year", "built", "made", "bought", "of", "circa", "back",
                "until", "til", "the", "a", "my", "her", "his", "their", "our", "your", "its", "'", "mid",
                "early", "late", "summer", "winter", "spring", "fall", "this", "that"}  # fmt: skip
_MONEY_FRAME = {"for", "pay", "do", "about", "take", "offer", "accept", "sell", "give", "say", "price", "around",
                "charge", "costs", "cost", "quote", "it"}  # fmt: skip
_SPOKEN_DIGIT_RUN = 4  # "five five five one two one two": a phone number read out, not a price


def _words_before(toks: list[_Tok], i: int, n: int) -> list[str]:
    out: list[str] = []
    j = i - 1
    while j >= 0 and len(out) < n:
        tok = toks[j]
        if tok.kind in ("word", "punct") and tok.text not in ",":
            out.append(tok.low)
        elif tok.kind == "punct":
            pass
        else:
            out.append(tok.low)
        j -= 1
    return out  # nearest first


def _words_after(toks: list[_Tok], i: int, n: int) -> list[str]:
    return [t.low for t in toks[i : i + n]]


def _classify(
    text: str,
    toks: list[_Tok],
    first: int,
    end: int,
    value: float,
    *,
    money: bool,
    digits: str | None,
    colloquial: bool,
    is_words: bool,
) -> MentionKind:
    before = _words_before(toks, first, 4)
    after = _words_after(toks, end, 4)
    b1 = before[0] if before else ""
    b2 = before[1] if len(before) > 1 else ""
    a1 = after[0] if after else ""
    a2 = after[1] if len(after) > 1 else ""
    tail = " ".join(after)
    head = text[max(0, toks[first].start - 40) : toks[first].start].lower()

    if a1 in ("%", "percent", "pct"):
        return MentionKind.PERCENT
    if money and a1 in _MEASURE_UNITS and re.search(r"k$", text[toks[first].start : toks[end - 1].end].lower()):
        return MentionKind.MEASURE  # "84k miles"
    if not money and any(tail.startswith(h) for h in _HOURLY_AFTER if h.startswith(("an ", "a ", "per "))):
        return MentionKind.HOURLY  # "85 an hour"
    if not money and re.search(r"\b(labor|labour|hourly) rate (is|of)\s*$", head):
        return MentionKind.HOURLY
    if money and is_words and value == 1 and colloquial and b1 not in _MONEY_FRAME and b1 not in ("just", "only"):
        return MentionKind.DELTA  # "a dollar wouldn't make any difference": a difference, not a price
    if money:
        if any(tail.startswith(h) or tail.replace(" / ", "/").startswith(h) for h in _HOURLY_AFTER):
            return MentionKind.HOURLY
        if b1 == "it" and b2 in ("lower", "drop", "reduce", "knock", "bring", "take", "cut", "mark"):
            return MentionKind.DELTA  # "lower it $500"
        if (a1 in _DELTA_AFTER and a1 not in ("over", "under", "above", "below")) or b1 in _DELTA_BEFORE:
            if not (b1 in ("up", "down", "by") and a1 not in _DELTA_AFTER):
                return MentionKind.DELTA
        near = head[-30:] + " " + text[toks[end - 1].end : toks[end - 1].end + 40].lower()
        if _FEE_WORDS.search(near) and not re.search(r"\b(repair|job|fix|replace|install|total)\b", tail):
            return MentionKind.FEE
        if _HOURLY_BEFORE.search(head):
            return MentionKind.HOURLY
        return MentionKind.PRICE

    # No money marker from here on.
    if (a1 == "'" and a2 == "s") or (a1 == "s" and value % 10 == 0 and value >= 20):
        return MentionKind.YEAR  # "the 80's", "the 1990s": a decade
    if a1 in ("am", "pm", "a.m", "p.m", "o'clock", "oclock") or (a1 == "a" and a2 == ".") or a1 == "ish":
        return MentionKind.TIME
    if a1 in ("in", "at") and a2 in ("the",) and len(after) > 2 and after[2] in (
        "morning", "afternoon", "evening", "night"):
        return MentionKind.TIME
    if (b1 in _MONTHS or a1 in _MONTHS) and value <= 31:
        return MentionKind.DATE
    if a1 in ("st", "nd", "rd", "th"):
        return MentionKind.ORDINAL
    if b1 in _TIME_PREPS and 0 < value <= 12 and value == int(value) and b2 not in _MONEY_FRAME:
        return MentionKind.TIME
    if b1 in _TIME_PREPS and colloquial and 1 <= value // 100 <= 12 and value % 100 in (0, 15, 30, 45) and (
        a1 in _TIME_AFTER or b2 in ("there", "here", "by", "over", "come", "you", "me", "it", "up", "back")
    ):
        return MentionKind.TIME
    if a1 in _DURATION_UNITS or (a1 in ("more", "full", "whole", "or") and a2 in _DURATION_UNITS) or (
        a1 == "-" and a2 in _DURATION_UNITS):
        return MentionKind.DURATION
    if a1 in _MEASURE_UNITS or (a1 == "k" and a2 in _MEASURE_UNITS):
        return MentionKind.MEASURE
    if b1 in _ADDRESS_BEFORE or b1 == "#":
        return MentionKind.ADDRESS
    if digits is not None and value == int(value) and value >= 10 and _looks_like_street(toks, end):
        return MentionKind.ADDRESS
    if digits is not None and len(digits) == 5 and "," not in digits and (
        any(w in ("zip", "zipcode", "postal") for w in before[:3])
        or (b1 and len(b1) == 2 and toks[first - 1].text.isupper())
    ):
        return MentionKind.ZIP
    if digits is not None and len(digits) == 4 and "," not in digits and 1950 <= value <= 2039 and (
        b1 in _YEAR_BEFORE or a1 in ("model", "models", "car", "truck", "vehicle", "version", "edition")
        or (end < len(toks) and toks[end].kind == "word" and toks[end].text[:1].isupper()
            and toks[end].low not in ("i", "and", "is", "ok", "okay", "sounds", "please", "sound", "would",
                                      "works", "then", "that", "if", "for", "it", "cash", "dollars"))
    ):
        return MentionKind.YEAR
    if digits is not None and len(digits) == 4 and 1950 <= value <= 2035 and value % 50 and b1 not in _MONEY_FRAME:
        return MentionKind.YEAR  # a bare "2019" is a year far more often than a price
    if a1 in ("year", "years") or (a1 == "-" and a2 in ("year", "years")):
        return MentionKind.DURATION
    if a1 in ("off", "more", "less", "extra", "cheaper", "discount", "short") or b1 in (
        "another", "extra", "additional", "knock", "knocked", "save", "saves"):
        return MentionKind.DELTA
    if a1 in _COUNT_NOUNS or (a1 in ("more", "new", "old", "different", "big", "small", "little", "other",
                                      "extra", "separate", "full", "half")
                              and a2 in _COUNT_NOUNS):
        return MentionKind.COUNT
    if (b1 == "a" and value <= 10) or (b1 == "of" and b2 in ("scale", "out")):
        return MentionKind.COUNT  # "it's a 10", "on a scale of 1-10"
    if is_words and value < 10 and not colloquial:
        return MentionKind.COUNT  # "one", "two" alone are almost never prices on a phone call
    if b1 in ("number", "model", "version", "gen", "generation", "size", "iphone", "galaxy", "ps", "xbox",
              "windows", "ios", "series", "route", "highway", "interstate", "i", "exit", "channel", "chapter",
              "line", "step", "option", "plan", "grade", "class", "level", "page", "rated", "out", "scale"):
        return MentionKind.COUNT
    return MentionKind.NUMBER


def _looks_like_street(toks: list[_Tok], end: int) -> bool:
    """"123 Main St", "4410 North Elm Avenue": a capitalised name then a street word within four tokens."""
    words = [t for t in toks[end : end + 5] if t.kind == "word"]
    if not words or not words[0].text[:1].isupper():
        return False
    return any(w.low in _STREET_WORDS and w.low not in ("n", "s", "e", "w") for w in words[1:4]) or (
        len(words) > 1 and words[0].low in ("north", "south", "east", "west") and words[1].text[:1].isupper()
    )


def _money_after(toks: list[_Tok], j: int) -> tuple[bool, int]:
    """Whether a money word follows at token j; returns the index after it."""
    if j < len(toks) and toks[j].kind == "word" and toks[j].low in _MONEY_WORDS:
        return True, j + 1
    if j < len(toks) and toks[j].kind == "punct" and toks[j].text == "$" and toks[j].start == toks[j - 1].end:
        return True, j + 1
    return False, j


def _cents_after(toks: list[_Tok], j: int) -> tuple[float, int]:
    """"... dollars and fifty cents" / "... bucks fifty" -> (0.5, index after)."""
    cur = _Cursor(toks, j)
    if cur.low() == "and":
        cur.take()
    if j < len(toks) and cur.peek() is not None and cur.peek().kind == "num":  # type: ignore[union-attr]
        tok = cur.take()
        if cur.low() in ("cents", "cent"):
            cur.take()
            return _num_value(tok) / 100, cur.i
        return 0.0, j
    cents = _two_digit(cur) if cur.low() not in _UNITS else _small(cur)
    if cents is None:
        return 0.0, j
    if cur.low() in ("cents", "cent"):
        cur.take()
    elif _is_num_word_tok(cur.peek()) or cur.low() in _COUNT_NOUNS:
        return 0.0, j
    return cents / 100, cur.i


def _is_num_word_tok(tok: _Tok | None) -> bool:
    return tok is not None and _is_num_word(tok)


def find_mentions(text: str) -> list[Mention]:
    """Every number in `text`, in order, with its value, character span and kind."""
    if not isinstance(text, str):
        raise TypeError(f"find_mentions wants a str, got {type(text).__name__}")
    toks = _tokenize(text)
    out: list[Mention] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "phone":
            out.append(_mention(text, toks, i, i + 1, float(re.sub(r"\D", "", tok.text)), MentionKind.PHONE, False))
            i += 1
            continue
        if tok.kind == "date":
            out.append(_mention(text, toks, i, i + 1, float(tok.text.split("/")[0]), MentionKind.DATE, False))
            i += 1
            continue
        if tok.kind == "clock":
            hh, mm = tok.text.split(":")
            out.append(_mention(text, toks, i, i + 1, int(hh) + int(mm) / 60, MentionKind.TIME, False))
            i += 1
            continue
        if tok.kind == "thousands":  # "84, 000": a typed thousands separator with a stray space
            toks[i] = _Tok("num", tok.text.replace(" ", ""), tok.low.replace(" ", ""), tok.start, tok.end)
            tok = toks[i]
        if tok.kind == "num":
            i = _digits_mention(text, toks, i, out)
            continue
        if tok.kind == "word" and (tok.low in _NUMBER_WORDS or tok.low in ("a", "an")):
            run = _digit_word_run(toks, i)
            if run >= _SPOKEN_DIGIT_RUN:
                end = i
                count = 0
                while count < run:
                    if toks[end].kind == "word":
                        count += 1
                    end += 1
                digits = "".join(str(_UNITS.get(t.low, 0)) for t in toks[i:end] if t.kind == "word")  # oh = 0
                out.append(_mention(text, toks, i, end, float(digits), MentionKind.PHONE, False))
                i = end
                continue
            parsed = _parse_words(toks, i)
            if parsed is not None:
                i = _words_mention(text, toks, i, parsed, out)
                continue
        i += 1
    return _join_ranges(text, out)


def _join_ranges(text: str, mentions: list[Mention]) -> list[Mention]:
    """"between 1 and 3": the second end of a range is the same kind of thing as the first."""
    out: list[Mention] = []
    for m in mentions:
        prev = out[-1] if out else None
        if (
            prev is not None
            and m.kind is MentionKind.NUMBER
            and prev.kind in (MentionKind.TIME, MentionKind.DURATION, MentionKind.COUNT, MentionKind.MEASURE)
            and text[prev.end : m.start].strip().lower() in ("and", "to", "-", "or", "till", "until")
            and (prev.kind is not MentionKind.TIME or m.value <= 12)
        ):
            m = Mention(m.value, m.start, m.end, m.text, prev.kind, m.money)
        elif (
            prev is not None
            and prev.kind is MentionKind.NUMBER
            and m.kind in (MentionKind.DURATION, MentionKind.MEASURE)
            and text[prev.end : m.start].strip().lower() in ("to", "-", "or")
        ):
            out[-1] = Mention(prev.value, prev.start, prev.end, prev.text, m.kind, prev.money)  # "1 to 2 hours"
        out.append(m)
    return out


def _digit_word_run(toks: list[_Tok], i: int) -> int:
    """How many single-digit words ("five five five ...") start at i, hyphens and commas allowed between."""
    run = 0
    j = i
    while j < len(toks):
        tok = toks[j]
        if tok.kind == "word" and (tok.low in _UNITS or (tok.low == "oh" and run)):
            run += 1
        elif not (tok.kind == "punct" and tok.text in "-,."):
            break
        j += 1
    return run


def _digits_mention(text: str, toks: list[_Tok], i: int, out: list[Mention]) -> int:
    tok = toks[i]
    value = _num_value(tok)
    money = tok.suffix == "k"
    first = i
    if tok.suffix in ("st", "nd", "rd", "th"):
        out.append(_mention(text, toks, i, i + 1, value, MentionKind.ORDINAL, False))
        return i + 1
    if i > 0 and toks[i - 1].kind == "punct" and toks[i - 1].text == "$":
        money = True
        first = i - 1
    end = i + 1
    if end < len(toks) and toks[end].kind == "word" and toks[end].low in ("hundred", "thousand", "grand", "k"):
        scale = toks[end].low
        value *= 100 if scale == "hundred" else 1000
        money = money or scale in ("grand", "k")
        end += 1
    if tok.suffix == "k" and end < len(toks) and toks[end].kind == "word" and toks[end].low in _MEASURE_UNITS:
        money = False
    after_money, after = _money_after(toks, end)
    if after_money:
        money = True
        end = after
        if toks[after - 1].low in ("buck", "bucks", "dollar", "dollars"):
            cents, end = _cents_after(toks, end)
            value += cents
    kind = _classify(text, toks, first, end, value, money=money, digits=tok.text, colloquial=False,
                     is_words=False)
    out.append(_mention(text, toks, first, end, value, kind, money))
    return end


def _words_mention(text: str, toks: list[_Tok], i: int, parsed: _Parsed, out: list[Mention]) -> int:
    end = parsed.end_tok
    value = parsed.value
    money = parsed.money
    after_money, after = _money_after(toks, end)
    if after_money:
        money = True
        end = after
        if toks[after - 1].low in ("buck", "bucks", "dollar", "dollars") and value == int(value):
            cents, end = _cents_after(toks, end)
            value += cents
    kind = _classify(text, toks, i, end, value, money=money, digits=None, colloquial=parsed.colloquial,
                     is_words=True)
    out.append(_mention(text, toks, i, end, value, kind, money))
    return end


def _mention(
    text: str, toks: list[_Tok], first: int, end: int, value: float, kind: MentionKind, money: bool
) -> Mention:
    start = toks[first].start
    stop = toks[end - 1].end
    return Mention(value=round(value, 2), start=start, end=stop, text=text[start:stop], kind=kind, money=money)
