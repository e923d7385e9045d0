"""Haggle's contracts: the event catalog, subject layout and the shared provider-state fold."""

from . import codec, events, state, subjects
from .codec import EventDecodeError, decode, encode
from .subjects import subject_for

__all__ = ["EventDecodeError", "codec", "decode", "encode", "events", "state", "subject_for", "subjects"]
