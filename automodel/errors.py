"""Exception types with messages that tell the user the fix.

Only `cli.py` turns them into exit codes; library code raises them.
"""


class AutomodelError(Exception):
    """Base class: `str(err)` is a complete, one-paragraph message for the user."""

    exit_code = 1


class UsageError(AutomodelError):
    """A bad command-line option or combination of options."""

    exit_code = 2


class DatasetError(AutomodelError):
    """The dataset folder cannot be used as it is (missing, empty, unlabelled, ...)."""

    exit_code = 3


class ContractError(AutomodelError):
    """A pipeline module does not follow its contract in interfaces/."""

    exit_code = 4


class RunError(AutomodelError):
    """A run directory is missing, inconsistent or from another dataset."""

    exit_code = 5


class LLMConfigError(AutomodelError):
    """The LLM brain was asked for but no key or server is configured, or it failed for good."""

    exit_code = 6


class BrainError(AutomodelError):
    """A brain could not produce a usable answer for one role (e.g. the LLM's reply
    stayed malformed after a retry); the loop records it and the run goes on."""

    exit_code = 7


class LLMServiceError(BrainError):
    """The LLM server kept failing (rate limits, server errors, timeouts) after all retries."""

    exit_code = 8


class HarnessError(AutomodelError):
    """automodel's own side failed during a run (the sandbox, the staged data, a
    workspace that cannot be written, a full disk): no engineer can repair it, so
    the run stops and says how to continue once the cause is fixed."""

    exit_code = 9


class WeightsError(AutomodelError):
    """Pretrained weights could not be fetched (the hub cannot be reached, or has no such weights)."""

    exit_code = 10
