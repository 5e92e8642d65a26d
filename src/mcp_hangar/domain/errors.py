"""Failures a caller of a provider can see. Each message says what happened and what to do."""

from __future__ import annotations


class ProviderError(Exception):
    """Base for every failure of ours (as opposed to a tool's own error result).

    ``sent`` tells whether the request reached the provider: only a request that was never sent
    (or a read-only/idempotent one) is safe to retry.
    """

    sent: bool = False

    def __init__(self, message: str, *, sent: bool | None = None) -> None:
        super().__init__(message)
        if sent is not None:
            self.sent = sent


class UnknownProvider(ProviderError):
    pass


class StartFailed(ProviderError):
    """The provider could not be started; nothing was sent."""


class NotSupported(ProviderError):
    pass


class BackingOff(ProviderError):
    """The provider crashed repeatedly and may not start again yet."""


class CircuitOpen(ProviderError):
    """The provider's circuit breaker is open: the call was not sent."""


class ConnectionLost(ProviderError):
    """The provider went away (exited, closed its pipes) while requests were in flight."""

    sent = True


class CallTimeout(ProviderError):
    sent = True


class RemoteError(ProviderError):
    """The provider answered with a JSON-RPC error."""

    sent = True

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(f"provider returned error {code}: {message}", sent=True)
        self.code = code
        self.remote_message = message
        self.data = data
