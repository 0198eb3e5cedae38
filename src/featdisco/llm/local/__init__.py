"""The embedded local model: the backend that runs it in-process (backend.py) and the
installer that fetches and verifies its file (install.py; ``featdisco models install``).

Importing this package loads neither llama-cpp-python nor the model file.
"""

from featdisco.llm.local.backend import (
    DEMO_QUALITY_NOTE,
    INSTALL_HINT,
    LocalLLM,
    patch_grammar,
    schema_to_grammar,
)

__all__ = ["DEMO_QUALITY_NOTE", "INSTALL_HINT", "LocalLLM", "patch_grammar", "schema_to_grammar"]
