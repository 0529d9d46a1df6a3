"""Hub failures as one-line errors: :class:`HubError` and the translation of ``huggingface_hub``'s exceptions.

What lives here: :class:`HubError` (raised by publishing, ``hub.py``, and by reading a record back, ``record.py``) and
:func:`hub_error`, which turns a 401, 403, 404, offline mode or an unreachable Hub into a message that says what went
wrong and how to fix it, with every token in play replaced by ``<token>``. What does not: deciding when to call the
Hub (``hub.py``, ``record.py``, ``hf_dmix.cli``).
"""

from __future__ import annotations

from collections.abc import Sequence


class HubError(RuntimeError):
    """Publishing to or reading from the Hub failed: the message says what went wrong and how to fix it (one line).

    Raised for a rejected token (401), a namespace the token cannot write to (403), a missing or private repository,
    an unreachable Hub, and an output folder that cannot be published. Local files are never changed by a failed push.
    """


def _is_network_error(err: BaseException) -> bool:
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    names = {c.__name__ for c in type(err).__mro__}
    return bool(
        names & {"TransportError", "NetworkError", "ConnectError", "ConnectionError", "TimeoutException", "Timeout"}
    )


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_error(err: BaseException, action: str, repo_id: str, secrets: Sequence[str | None] = ()) -> HubError | None:
    """A one-line :class:`HubError` for a failure of ``huggingface_hub``, or ``None`` if ``err`` is not one.

    ``action`` starts the message (``"Pushing out to 'alice/model'"``); ``secrets`` are the tokens in play (none
    given or found: a 401 means a token is missing, not wrong), each replaced by ``<token>`` in the message.
    """
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = _endpoint()
    namespace = repo_id.split("/")[0] if "/" in repo_id else None
    if isinstance(err, OfflineModeIsEnabled):
        msg = f"{action} failed: offline mode is on (HF_HUB_OFFLINE=1); set HF_HUB_OFFLINE=0 to reach the Hub."
    elif isinstance(err, RevisionNotFoundError):
        msg = f"{action} failed: the revision does not exist in '{repo_id}' (404)."
    elif isinstance(err, RepositoryNotFoundError):
        msg = (
            f"{action} failed: repository '{repo_id}' not found at {endpoint}, or it is private and this token cannot "
            "read it (pass the owner's token with token=/--hub_token or HF_TOKEN)."
        )
    elif isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401 and not any(secrets):
            msg = (
                f"{action} failed: no Hub token (401 Unauthorized from {endpoint}). Pass a write token with "
                "--hub_token or HF_TOKEN (or run `hf auth login`)."
            )
        elif status == 401:
            msg = (
                f"{action} failed: the Hub at {endpoint} rejected the token (401 Unauthorized). Pass a valid write "
                "token with --hub_token or HF_TOKEN (or run `hf auth login`)."
            )
        elif status == 403:
            where = f"namespace '{namespace}'" if namespace else f"'{repo_id}'"
            msg = (
                f"{action} failed: this token may not write to {where} (403 Forbidden). Push to your own namespace "
                f"or an organization you belong to, e.g. --hub_model_id YOUR_NAME/{repo_id.split('/')[-1]}."
            )
        else:
            detail = (getattr(err, "server_message", None) or str(err)).strip().splitlines()
            msg = f"{action} failed: HTTP {status} from {endpoint}: {detail[0] if detail else type(err).__name__}"
    elif _is_network_error(err):
        detail = str(err).strip().splitlines()
        msg = (
            f"{action} failed: could not reach the Hub at {endpoint} ({type(err).__name__}: "
            f"{detail[0] if detail else 'no response'}). Check the network / HF_ENDPOINT and try again."
        )
    else:
        return None
    for secret in secrets:
        if secret:
            msg = msg.replace(secret, "<token>")
    return HubError(" ".join(msg.split()))
