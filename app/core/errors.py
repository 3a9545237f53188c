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


class ShedError(ServiceError):
    """The request was dropped before its model ran, so the service stays responsive.

    ``reason`` labels the shed-requests metric; ``retry_after_s`` (when set) becomes the
    ``Retry-After`` header: the queues are bounded, so they drain within about a second.
    """

    reason = "shed"
    retry_after_s: int | None = 1


class QueueFullError(ShedError):
    """The micro-batcher already holds as many images as it may queue."""

    status_code = 503
    reason = "queue_full"


class DeadlineExceededError(ShedError):
    """The request could not reach its model before its deadline."""

    status_code = 503
    reason = "deadline"


class ClientDisconnectedError(ShedError):
    """The client closed the connection; nobody reads the answer (499, as nginx logs it)."""

    status_code = 499
    reason = "disconnected"
    retry_after_s = None
