"""The one error the service raises at start-up (its own module: the service's parts raise it too)."""


class ServiceError(RuntimeError):
    """The service cannot start; the message names the setting or file at fault."""
