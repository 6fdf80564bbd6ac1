"""Dendrite v0.13.8 as the interop environment's second real homeserver (issue 21).

Built on first use with ``go install`` from the Go module proxy into
``tests/.cache/dendrite-<version>-<key>/bin`` (nothing of Dendrite's source enters the
repository), configured as Dendrite's own CI configures it for Complement
(``generate-config -ci``), and run inside its own namespace of the harness
(``stubtest-<pid>-dendrite``) beside the same stubs, DNS server and CA as Synapse.

Dendrite resolves names with Go's own resolver, which reads the namespace's
``resolv.conf``, so it finds the stubs through ``.well-known``, SRV and port 8448 as it
would on the internet. It trusts the tests' CA through ``SSL_CERT_FILE`` (its
``.well-known`` client ignores ``disable_tls_validation``). v0.13.8 has no outbound IP
blocklist (CVE-2024-52594): it runs only inside the namespace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.interop.harness import (
    CACHE_DIR,
    DEFAULT_RECORDS,
    DEFAULT_STUBS,
    EnvironmentUnavailable,
    HarnessError,
    HomeserverSpec,
    ManagedProcess,
    NetworkNamespace,
    PeerHomeserver,
    StubSpec,
    StubWorld,
    TestCA,
    install_once,
    register_user,
    stub_world,
    wait_for_homeserver,
)

#: The module and version (Apache-2.0; never github.com/element-hq/dendrite, AGPL).
DENDRITE_MODULE = "github.com/matrix-org/dendrite"
DENDRITE_VERSION = "v0.13.8"
#: The commands Complement's image builds (build/scripts/Complement.Dockerfile).
DENDRITE_COMMANDS = ("dendrite", "generate-keys", "generate-config", "create-account")
#: The build: no cgo gives the pure-Go SQLite and Go's own resolver; no toolchain switch.
GO_BUILD_ENV = {"GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-trimpath"}
#: Dendrite's in-memory cache (its default, 1 GB, is for a real server).
CACHE_SIZE = "64mb"
#: Proxy variables Dendrite's federation client would honour (http.ProxyFromEnvironment).
PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
#: How long a Dendrite command (generate-keys, generate-config) may take, in seconds.
TOOL_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class DendriteSpec(HomeserverSpec):
    """Where Dendrite listens and what it is called."""

    server_name: str = "dendrite.test"
    address: str = "127.0.0.31"


#: Where Go's own release archive puts the toolchain: CI's environment may not have it on
#: PATH (a login shell's profile adds it), and the Dendrite proof must still run there.
GO_FALLBACK = Path("/usr/local/go/bin/go")


def go_command() -> str:
    """The ``go`` command: on PATH, else :data:`GO_FALLBACK`; EnvironmentUnavailable when
    neither exists."""
    go = shutil.which("go")
    if go is not None:
        return go
    if GO_FALLBACK.is_file() and os.access(GO_FALLBACK, os.X_OK):
        return str(GO_FALLBACK)
    raise EnvironmentUnavailable(
        f"Dendrite interop tests need Go to build Dendrite {DENDRITE_VERSION}"
        f" (`go` is not on PATH nor at {GO_FALLBACK}); CI has it"
    )


def go_version(env: Mapping[str, str] = GO_BUILD_ENV) -> str:
    """The Go toolchain's version (``go1.26.8``); EnvironmentUnavailable when there is none."""
    done = subprocess.run(
        [go_command(), "env", "GOVERSION"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
        env={**os.environ, **env},
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise EnvironmentUnavailable(f"`go env GOVERSION` failed: {done.stderr.strip()}")
    return done.stdout.strip()


def dendrite_install_dir(go: str, cache: Path = CACHE_DIR) -> Path:
    """Where the build for this version, commands, flags and Go toolchain ``go`` lives."""
    recipe = json.dumps(
        [DENDRITE_MODULE, DENDRITE_VERSION, DENDRITE_COMMANDS, GO_BUILD_ENV, go], sort_keys=True
    )
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return cache / f"dendrite-{DENDRITE_VERSION}-{key}"


def ensure_dendrite(cache: Path = CACHE_DIR, log: Callable[[str], None] | None = None) -> Path:
    """The folder of Dendrite's four commands, built with ``go install`` on first use."""
    go = go_version()
    target = dendrite_install_dir(go, cache)
    bin_dir = target / "bin"
    packages = [f"{DENDRITE_MODULE}/cmd/{c}@{DENDRITE_VERSION}" for c in DENDRITE_COMMANDS]
    install_once(
        target,
        [["mkdir", "-p", bin_dir], [go_command(), "install", *packages]],
        what="Dendrite",
        stamp=f"{DENDRITE_MODULE}@{DENDRITE_VERSION} built by {go}\n",
        cache=cache,
        env={**GO_BUILD_ENV, "GOBIN": str(bin_dir)},
        log=log,
    )
    return bin_dir


@dataclasses.dataclass(frozen=True)
class DendriteFiles:
    """Dendrite's generated config, keys and certificate."""

    spec: DendriteSpec
    directory: Path
    config_path: Path
    log_path: Path
    signing_key_path: Path
    tls_cert: Path
    tls_key: Path
    registration_shared_secret: str

    def signing_key(self) -> Any:
        """Dendrite's signing key as a stubserver ServerSigningKey."""
        return parse_matrix_key_pem(self.signing_key_path.read_text())


def parse_matrix_key_pem(text: str) -> Any:
    """A ServerSigningKey from Dendrite's ``MATRIX PRIVATE KEY`` PEM block (written by
    ``generate-keys --private-key``): a ``Key-ID: ed25519:V`` header, then the seed in
    base64."""
    from nacl.signing import SigningKey

    from stubserver.signing.keys import ServerSigningKey, decode_base64

    lines = [line.strip() for line in text.splitlines()]
    headers = dict(line.split(": ", 1) for line in lines if ": " in line)
    body = [line for line in lines if line and not line.startswith("-----") and ": " not in line]
    algorithm, _, version = headers["Key-ID"].partition(":")
    if algorithm != "ed25519" or len(body) != 1:
        raise HarnessError(f"not a Dendrite ed25519 key: {text!r}")
    return ServerSigningKey(version, SigningKey(decode_base64(body[0])))


def _tool(bin_dir: Path, *argv: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(bin_dir / str(argv[0])), *(str(a) for a in argv[1:])],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
        cwd=cwd,
    )
    if done.returncode != 0:
        raise HarnessError(f"Dendrite's {argv[0]} failed: {done.stderr[-2000:]}")
    return done.stdout


def write_dendrite_config(
    bin_dir: Path, directory: Path, spec: DendriteSpec, ca: TestCA
) -> DendriteFiles:
    """dendrite.yaml as ``generate-config -ci`` writes it (SQLite per component, rate limits
    off, no key perspectives), with registration by a fresh shared secret only, our key, a
    small cache and info logging to stderr; a TLS certificate from ``ca``."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "matrix_key.pem"
    _tool(bin_dir, "generate-keys", "--private-key", key_path, cwd=directory)
    tls_cert, tls_key = ca.issue([spec.server_name], directory, spec.server_name)
    generated = _tool(
        bin_dir,
        "generate-config",
        "-ci",
        "-server",
        spec.server_name,
        "-dir",
        directory,
        cwd=directory,
    )
    config: dict[str, Any] = yaml.safe_load(generated)
    secret = secrets.token_hex(16)
    config["global"]["private_key"] = str(key_path)
    config["global"]["cache"]["max_size_estimated"] = CACHE_SIZE
    config["client_api"]["registration_shared_secret"] = secret
    # Accounts come from the shared secret, as in Synapse's config (-ci opens registration,
    # which Dendrite refuses to start with unless given -really-enable-open-registration).
    config["client_api"]["registration_disabled"] = True
    config["logging"] = [{"type": "std", "level": "info"}]
    # What -ci sets and these tests rely on: say so if a version ever changes it.
    checks = {
        "rate limiting off": not config["client_api"]["rate_limiting"]["enabled"],
        "no key perspectives": config["federation_api"]["key_perspectives"] == [],
        "TLS validation on": not config["federation_api"]["disable_tls_validation"],
        "SQLite": str(config["room_server"]["database"]["connection_string"]).startswith("file:"),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise HarnessError(f"generate-config -ci no longer gives {failed}: {generated[:2000]}")
    config_path = directory / "dendrite.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return DendriteFiles(
        spec,
        directory,
        config_path,
        directory / "dendrite.log",
        key_path,
        tls_cert,
        tls_key,
        secret,
    )


@dataclasses.dataclass
class RunningDendrite:
    """A started Dendrite."""

    files: DendriteFiles
    process: ManagedProcess


def dendrite_argv(bin_dir: Path, files: DendriteFiles, ca: TestCA) -> list[str]:
    """The command that runs Dendrite (to be run inside the namespace, in
    ``files.directory``): no proxy variables, the tests' CA as its only roots, TLS on the
    federation port, plain HTTP on the client port. ``env`` execs Dendrite, so the
    process started is Dendrite itself."""
    spec = files.spec
    unset = [arg for variable in PROXY_VARIABLES for arg in ("-u", variable)]
    return [
        "env",
        *unset,
        f"SSL_CERT_FILE={ca.cert_path}",
        str(bin_dir / "dendrite"),
        "--config",
        str(files.config_path),
        "--tls-cert",
        str(files.tls_cert),
        "--tls-key",
        str(files.tls_key),
        "--http-bind-address",
        f"{spec.address}:{spec.client_port}",
        "--https-bind-address",
        f"{spec.address}:{spec.federation_port}",
    ]


def start_dendrite(
    ns: NetworkNamespace, bin_dir: Path, files: DendriteFiles, ca: TestCA
) -> RunningDendrite:
    """Start Dendrite in the namespace (:func:`dendrite_argv`) and wait until its TLS
    listener answers by name."""
    process = ns.spawn(
        "dendrite",
        dendrite_argv(bin_dir, files, ca),
        log_path=files.log_path,
        cwd=files.directory,
    )
    process.drain_stdout()
    wait_for_homeserver(ns, files.spec, ca, process, log_path=files.log_path)
    return RunningDendrite(files, process)


@dataclasses.dataclass
class DendriteEnvironment(StubWorld):
    """The Dendrite environment, started by :func:`dendrite_environment`."""

    dendrite: RunningDendrite
    #: Dendrite's user with a displayname: (user ID, displayname, access token).
    dendrite_user: tuple[str, str, str]

    @property
    def homeserver(self) -> PeerHomeserver:
        """Dendrite, as the tests shared with Synapse meet it."""
        files = self.dendrite.files
        return PeerHomeserver(
            "Dendrite",
            files.spec,
            files.signing_key(),
            self.dendrite_user,
            files.log_path,
            files.registration_shared_secret,
        )


@contextlib.contextmanager
def dendrite_environment(
    directory: Path,
    *,
    stubs: Sequence[StubSpec] = DEFAULT_STUBS,
    records: Sequence[Mapping[str, Any]] = DEFAULT_RECORDS,  # names dendrite.test
    spec: DendriteSpec = DendriteSpec(),  # frozen, never mutated
    log: Callable[[str], None] | None = None,
) -> Iterator[DendriteEnvironment]:
    """Namespace, CA, DNS, stubs and Dendrite (started after the stubs, so that it never
    backs off from one that is not up yet), torn down in reverse order on exit."""
    bin_dir = ensure_dendrite(log=log)
    with contextlib.ExitStack() as stack:
        world = stack.enter_context(
            stub_world(directory, stubs=stubs, records=records, namespace_tag="dendrite")
        )
        files = write_dendrite_config(bin_dir, directory / "dendrite", spec, world.ca)
        dendrite = start_dendrite(world.ns, bin_dir, files, world.ca)
        stack.callback(dendrite.process.stop)
        displayname = "Bob on Dendrite"
        token = register_user(
            world.ns, spec.client_url, files.registration_shared_secret, "bob", displayname
        )
        user = (f"@bob:{spec.server_name}", displayname, token)
        yield DendriteEnvironment(
            world.ns, world.directory, world.ca, world.dns, world.stubs, dendrite, user
        )
