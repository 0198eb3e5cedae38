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


def __getattr__(name: str) -> object:
    # The estimator pulls in faiss, onnxruntime and the LLM SDKs: load it only when asked.
    if name == "FeatureDiscovery":
        from featdisco.estimator import FeatureDiscovery

        return FeatureDiscovery
    raise AttributeError(f"module 'featdisco' has no attribute {name!r}")

__all__ = [
    "FeatdiscoError",
    "FeatureDiscovery",
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
