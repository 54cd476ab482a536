"""The one error every failed decryption raises, whatever the cause."""


class DecryptionError(Exception):
    """Raised when a ciphertext cannot be opened: wrong key, tampering, truncation or garbage.

    The message never says which of those it was, so that an attacker probing
    the reviewer interface learns nothing from it.
    """

    def __init__(self, message: str = "this item cannot be decrypted") -> None:
        super().__init__(message)
