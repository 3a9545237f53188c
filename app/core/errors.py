"""Exceptions that carry their HTTP status.

The core modules (imaging, registry) raise these and stay usable without HTTP; the handlers
in ``app.api.errors`` map them to ``{"detail": ...}`` responses in one place.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: ``status_code`` is what the client receives, the message is the detail."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadImageError(ServiceError):
    """The upload is an image of a supported format but cannot be decoded (truncated, corrupt)."""

    status_code = 400


class UnsupportedImageError(ServiceError):
    """The upload is not an image, or not one of the supported formats."""

    status_code = 415


class PayloadTooLargeError(ServiceError):
    """Too many bytes, too many pixels or too many files."""

    status_code = 413


class ModelUnavailableError(ServiceError):
    """The model an endpoint needs is not loaded (see ``/readyz`` for why)."""

    status_code = 503


class InvalidModelError(ServiceError):
    """A model or index version on disk breaks the contract; it is refused, never served."""


class NotFoundError(ServiceError):
    """A model, version or label that is not loaded (or does not exist) was asked for."""

    status_code = 404


class ConflictError(ServiceError):
    """An admin change that cannot apply to the current state (e.g. nothing to roll back to)."""

    status_code = 409
