"""Certificates for the TLS Redis of the real-Ray tier, made by the test with the webhook's own generator
(ECDSA P-256): a CA, Redis's server certificate for 127.0.0.1 and localhost, a second one for another name
only, a client certificate signed by the same CA, and an unrelated CA for the wrong-CA control."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from webhook.certs.generate import KeyPair, generate_ca, generate_leaf

from .redis_server import RedisTls

# The only name in the misnamed server certificate: neither 127.0.0.1 nor the address's host `redis`.
MISNAMED_HOST = "elsewhere.example"


@dataclass(frozen=True)
class TlsMaterial:
    ca: KeyPair
    server: KeyPair
    misnamed_server: KeyPair
    client: KeyPair
    other_ca: KeyPair

    @classmethod
    def generate(cls, client_name: str = "ray") -> TlsMaterial:
        ca = generate_ca("realray-redis-ca", days=2)
        return cls(
            ca=ca,
            server=generate_leaf(ca, ["localhost"], ["127.0.0.1"], days=1),
            misnamed_server=generate_leaf(ca, [MISNAMED_HOST], [], days=1),
            client=generate_leaf(ca, [], [], days=1, client=True, common_name=client_name),
            other_ca=generate_ca("realray-unrelated-ca", days=2),
        )

    def redis_tls(self, folder: Path, auth_clients: bool, misnamed: bool = False) -> RedisTls:
        """Write Redis's files (and the client certificate its own redis-cli uses) into `folder`; `misnamed`:
        Redis presents the certificate for MISNAMED_HOST only."""
        folder.mkdir(parents=True, exist_ok=True)
        server = self.misnamed_server if misnamed else self.server
        files = {"ca.crt": self.ca.cert_pem, "server.crt": server.cert_pem, "server.key": server.key_pem,
                 "client.crt": self.client.cert_pem, "client.key": self.client.key_pem}
        for name, data in files.items():
            path = folder / name
            path.touch(mode=0o600)
            path.write_bytes(data)
        return RedisTls(cert=folder / "server.crt", key=folder / "server.key", client_ca=folder / "ca.crt",
                        auth_clients=auth_clients, cli_ca=folder / "ca.crt", cli_cert=folder / "client.crt",
                        cli_key=folder / "client.key")
