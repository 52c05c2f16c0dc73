"""turnout's exceptions: one root, one base per area, each carrying the data its handler needs."""

from __future__ import annotations


class TurnoutError(Exception):
    """Raised when anything in turnout fails in a way the user should read as one sentence."""


class ConfigError(TurnoutError):
    """Raised when turnout.yaml (or a TURNOUT_ environment override) is missing or invalid."""


class InputLineError(TurnoutError):
    """Raised when one input line cannot become a job; the batch goes on without it.

    ``code`` is a stable machine-readable reason (``invalid_json``, ``missing_prompt``, …)
    written into the error line; ``custom_id`` is the line's id when it could be read.
    """

    def __init__(self, code: str, message: str, custom_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.custom_id = custom_id


class ModelFileError(TurnoutError):
    """Raised when a trained router model file is missing, corrupt or from another version."""


class ProviderError(TurnoutError):
    """Raised when a model call failed after LiteLLM tried every deployment of the tier."""

    def __init__(self, code: str, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status_code = status_code
        #: the deployments that failed the call or were passed over, in the order tried
        self.deployments: list[str] = []


class RetryableProviderError(ProviderError):
    """Raised for rate limits, 5xx, timeouts and lost connections: worth trying again later.

    ``outage`` says the failure was the deployments' state, not the job's: every deployment
    that was called refused it for load (429) or failed while already on probation after a
    run of failures. Such a job waits for the provider without spending an attempt."""

    def __init__(
        self, code: str, message: str, status_code: int | None = None, retry_after: float | None = None,
        outage: bool = False,
    ) -> None:
        super().__init__(code, message, status_code)
        self.retry_after = retry_after
        self.outage = outage


class FatalProviderError(ProviderError):
    """Raised for bad requests, authentication and content-policy errors: retrying burns money."""


class ContextWindowError(FatalProviderError):
    """Raised when the prompt does not fit the deployment's context window."""
