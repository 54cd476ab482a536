"""Cryptography for the dropbox: envelopes, keys, codenames and KDFs.

PyNaCl for everything but X-Wing (crypto/xwing.py), which takes ML-KEM-768 and
X25519 from pyca/cryptography.

This package depends on nothing else in the project.
"""

from crypto.errors import DecryptionError
from crypto.kdf import PRODUCTION_COST, KdfCost

__all__ = ["PRODUCTION_COST", "DecryptionError", "KdfCost"]
