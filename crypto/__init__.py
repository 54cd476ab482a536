"""Cryptography for the dropbox: envelopes, keys, codenames and KDFs (PyNaCl only).

This package depends on nothing else in the project.
"""

from crypto.errors import DecryptionError
from crypto.kdf import PRODUCTION_COST, KdfCost

__all__ = ["PRODUCTION_COST", "DecryptionError", "KdfCost"]
