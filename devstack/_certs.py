"""Credentials for the local kube-apiserver, generated once per state directory.

The API server serves TLS on loopback (a client that skips verification would hide real TLS
problems the operator will meet in a cluster), signs ServiceAccount tokens with its own key, and
authenticates the admin through a static token in the ``system:masters`` group, so RBAC stays on
for everyone else. The ``openssl`` CLI does the work: it is on every machine that has a shell,
whereas the ``cryptography`` wheel is not a dependency of this project.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack._errors import StackError

__all__ = ["Pki", "ensure_pki"]

_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1, IP:10.0.0.1, DNS:localhost, DNS:kubernetes, \
DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
"""


@dataclass(frozen=True)
class Pki:
    """Paths of the generated material and the admin token."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def server_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def token_file(self) -> Path:
        return self.dir / "tokens.csv"

    @property
    def admin_token(self) -> str:
        return self.token_file.read_text().split(",", 1)[0]


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise StackError("kube-apiserver: the openssl CLI is needed to generate certificates")
    done = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"kube-apiserver: openssl {args[0]} failed: {done.stderr.strip()}")


def ensure_pki(directory: Path) -> Pki:
    """Create the CA, serving cert, ServiceAccount key pair and admin token unless present."""
    pki = Pki(directory)
    wanted = (pki.ca_crt, pki.server_crt, pki.server_key, pki.sa_key, pki.sa_pub, pki.token_file)
    if all(p.exists() for p in wanted):
        return pki
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    d = directory
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=routing-dev-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key",
        "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver",
        cwd=d,
    )  # fmt: skip
    (d / "apiserver.ext").write_text(_SERVER_EXT)
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "3650", "-extfile", "apiserver.ext", "-out", "apiserver.crt",
        cwd=d,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    token = secrets.token_hex(24)
    pki.token_file.write_text(f'{token},routing-dev-admin,routing-dev-admin,"system:masters"\n')
    pki.token_file.chmod(0o600)
    return pki
