"""Throwaway certificates for the Matomo gateway over HTTPS (scripts/tls-cert.sh, i.e. openssl:
no extra Python dependency, the local broker's certificates come from the same script)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from support.kafka import REPO


@dataclass(frozen=True)
class Certs:
    """Throwaway certificates of one test session (scripts/tls-cert.sh, i.e. openssl)."""

    ca: Path  # the "corporate" CA of the Matomo gateway (the simulator)
    server: tuple[str, str]  # (cert, key) signed by `ca`, SAN DNS:localhost,IP:127.0.0.1
    wrong_name: tuple[str, str]  # signed by `ca`, SAN DNS:gateway.example.invalid only
    unknown_ca: Path  # a CA that signed nothing anyone here serves


def make_certs(where: Path) -> Certs:
    """Makes them under `where`; raises RuntimeError naming the step that failed."""
    script = ["bash", str(REPO / "scripts" / "tls-cert.sh")]

    def make(*args: str) -> None:
        result = subprocess.run([*script, *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"tls-cert.sh {' '.join(args[:2])} failed:\n{result.stderr}")

    make("ca", str(where / "gateway-ca"), "matomo-kafka test gateway CA")
    make("ca", str(where / "unknown-ca"), "matomo-kafka test unknown CA")
    make("server", str(where / "server"), str(where / "gateway-ca"), "localhost",
         "DNS:localhost,IP:127.0.0.1")  # fmt: skip
    make("server", str(where / "wrong-name"), str(where / "gateway-ca"),
         "gateway.example.invalid", "DNS:gateway.example.invalid")  # fmt: skip
    server, wrong = (where / "server", where / "wrong-name")
    return Certs(ca=where / "gateway-ca.pem", server=(f"{server}.pem", f"{server}.key"),
                 wrong_name=(f"{wrong}.pem", f"{wrong}.key"),
                 unknown_ca=where / "unknown-ca.pem")  # fmt: skip
