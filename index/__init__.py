"""Case retrieval: L2-normalised image embeddings of atlas cases in a FAISS index.

Imports only numpy, faiss and the standard library, so serving code needs no torch.
"""

from index.hits import Hit
from index.manifest import Manifest
from index.store import CaseIndex
from index.types import KINDS, IndexSpec, choose_spec

__all__ = ["KINDS", "CaseIndex", "Hit", "IndexSpec", "Manifest", "choose_spec"]
