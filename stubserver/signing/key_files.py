"""The files ``stubserver generate`` and ``stubserver.testing`` write: names, modes, and
writing them safely.

Files in a directory, named after the server name with ``:`` and brackets made file-name
safe: ``<name>.signing.key`` (Synapse's format, mode 0600), ``<name>.crt``, ``<name>.key``
(mode 0600) and ``<name>.yaml``. Every file is written to a temporary file first and
renamed into place, so a crash never leaves half a key. Key versions are made the way
Synapse makes them.
"""

from __future__ import annotations

import os
import secrets
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Mode of files holding private keys.
PRIVATE_MODE = 0o600
#: Mode of the certificate and the config.
PUBLIC_MODE = 0o644
#: Synapse's key versions: ``a_`` and four random letters or digits.
KEY_VERSION_PREFIX = "a_"
KEY_VERSION_RANDOM_CHARS = 4
_KEY_VERSION_ALPHABET = string.ascii_letters + string.digits
#: Random bytes in a generated control_token (URL-safe base64 of them).
CONTROL_TOKEN_BYTES = 32


@dataclass(frozen=True)
class GeneratedPaths:
    """Where ``generate`` writes each file."""

    signing_key: Path
    certificate: Path
    private_key: Path
    config: Path

    def all(self) -> tuple[Path, ...]:
        """Every path, private keys first."""
        return (self.signing_key, self.private_key, self.certificate, self.config)


def file_stem(server_name: str) -> str:
    """A file-name-safe stem for ``server_name``: ``:`` becomes ``_``, brackets go."""
    return server_name.replace("[", "").replace("]", "").replace(":", "_")


def paths_for(directory: Path, server_name: str) -> GeneratedPaths:
    """The four files ``generate`` writes for ``server_name`` in ``directory``."""
    stem = file_stem(server_name)
    return GeneratedPaths(
        signing_key=directory / f"{stem}.signing.key",
        certificate=directory / f"{stem}.crt",
        private_key=directory / f"{stem}.key",
        config=directory / f"{stem}.yaml",
    )


def new_key_version() -> str:
    """A new key version as Synapse makes them: ``a_`` and four random [a-zA-Z0-9]."""
    random_part = "".join(
        secrets.choice(_KEY_VERSION_ALPHABET) for _ in range(KEY_VERSION_RANDOM_CHARS)
    )
    return KEY_VERSION_PREFIX + random_part


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` via a temporary file and a rename."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
