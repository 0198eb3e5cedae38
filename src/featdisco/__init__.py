"""featdisco: find out how a language model behaves by reading its transcripts."""

from featdisco.api import split
from featdisco.errors import FeatdiscoError, InputError
from featdisco.transcripts import (
    Piece,
    ReadOptions,
    ReadReport,
    SplitStats,
    Transcript,
    read_transcripts,
)

__version__ = "0.1.0"

__all__ = [
    "FeatdiscoError",
    "InputError",
    "Piece",
    "ReadOptions",
    "ReadReport",
    "SplitStats",
    "Transcript",
    "__version__",
    "read_transcripts",
    "split",
]
