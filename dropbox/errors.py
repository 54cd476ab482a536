"""Errors the services raise for a person to read: each message is one plain sentence."""


class DropboxError(Exception):
    """A request that cannot be carried out, with a message fit to show as it is."""


class NotFound(DropboxError):
    """The thing asked for does not exist (or the caller may not know that it does)."""


class AccessDenied(DropboxError):
    """The caller may not do this."""
