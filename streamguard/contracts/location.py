"""Where the contract files (``topics/``) are read from.

The repository's ``topics/`` folder is the single source of truth. The package reaches it through
the ``streamguard/contracts/files`` link (copied into wheels as package data), and
``STREAMGUARD_CONTRACTS_DIR`` points elsewhere when a deployment ships its own copy.
"""

import os
from pathlib import Path

from streamguard.contracts.exceptions import ContractError

__all__ = ["ENV_VAR", "contracts_dir"]

ENV_VAR = "STREAMGUARD_CONTRACTS_DIR"


def contracts_dir() -> Path:
    """Return the folder that holds the topic specs and ``schemas/``.

    Raises
    ------
    ContractError
        If the folder cannot be found.
    """
    override = os.environ.get(ENV_VAR)
    path = Path(override) if override else Path(__file__).resolve().parent / "files"
    if not (path / "schemas").is_dir():
        raise ContractError(f"contract folder {path} has no schemas/ (set {ENV_VAR})")
    return path
