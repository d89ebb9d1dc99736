"""``streamguard keys generate|show``: signing keys for commands, and the keyring to verify them.

``generate`` writes a new private key to ``DIR/signing-key.json`` (mode 0600; an existing one
is kept unless ``--force``) and adds its public key to ``DIR/keyring.json``, keeping the keys
already there so subscribers accept old and new signatures while the new key rolls out.
``show`` prints the key ids, issuers and public keys of a keyring or a private key file (never
the private key).
"""

import argparse
import datetime
import os
from pathlib import Path
from typing import Any

from streamguard.cli.errors import EXIT_CONFIG, EXIT_USAGE, fail

__all__ = ["KEYRING_FILE", "SIGNING_KEY_FILE", "register"]

SIGNING_KEY_FILE = "signing-key.json"
KEYRING_FILE = "keyring.json"


def register(sub: Any) -> None:
    """Add the ``keys`` command group."""
    parser = sub.add_parser("keys", help="generate and show command-signing keys")
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    actions.required = True
    generate = actions.add_parser(
        "generate", help=f"write DIR/{SIGNING_KEY_FILE} and add it to DIR/{KEYRING_FILE}"
    )
    generate.add_argument("--issuer", required=True, help="who signs (e.g. streamguard-prod)")
    generate.add_argument("--out", required=True, type=Path, metavar="DIR", help="key folder")
    generate.add_argument(
        "--force", action="store_true", help="replace an existing private key (rotation)"
    )
    generate.set_defaults(handler=run_generate)
    show = actions.add_parser("show", help="print key ids, issuers and public keys")
    which = show.add_mutually_exclusive_group(required=True)
    which.add_argument("--keyring", type=Path, metavar="FILE", help="a keyring file")
    which.add_argument("--key", type=Path, metavar="FILE", help="a private key file")
    show.set_defaults(handler=run_show)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_generate(args: argparse.Namespace) -> int:
    """Write a new signing key and add its public key to the folder's keyring."""
    from streamguard.security import (
        KeyFileError,
        add_to_keyring,
        generate_key,
        save_signing_key,
    )

    if not args.issuer.strip():
        fail("--issuer must not be empty", EXIT_USAGE)
    folder: Path = args.out
    try:
        # 0700: the folder holds a private key; an existing folder keeps its mode.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{folder}: cannot create key folder: {exc.strerror or exc}", EXIT_CONFIG)
    key_path = folder / SIGNING_KEY_FILE
    if key_path.exists() and not args.force:
        fail(f"{key_path}: a private key is already there (pass --force to rotate)", EXIT_CONFIG)
    key = generate_key(args.issuer.strip())
    try:
        save_signing_key(key, key_path, overwrite=args.force)
        ring = add_to_keyring(folder / KEYRING_FILE, key.verifying_key())
    except KeyFileError as exc:
        fail(str(exc), EXIT_CONFIG)
    mode = f"{os.stat(key_path).st_mode & 0o777:04o}"
    print(f"wrote signing key {key_path} (key id {key.key_id}, issuer {key.issuer}, mode {mode})")
    print(f"keyring {folder / KEYRING_FILE} holds {len(ring)} key(s): {', '.join(ring.key_ids)}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print one line per key: key id, issuer, public key (base64), retirement time."""
    import base64

    from streamguard.security import KeyFileError, load_keyring, load_signing_key

    try:
        if args.key is not None:
            keys = [load_signing_key(args.key).verifying_key()]
        else:
            keys = list(load_keyring(args.keyring))
    except KeyFileError as exc:
        fail(str(exc), EXIT_CONFIG)
    print(f"{'key_id':16}  {'issuer':24}  {'public_key_b64':44}  not_after")
    for key in keys:
        public = base64.b64encode(key.public_bytes).decode("ascii")
        print(f"{key.key_id:16}  {key.issuer:24}  {public:44}  {_when(key.not_after)}")
    return 0
