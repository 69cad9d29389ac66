"""A real S3 server on loopback for the tests: moto's server mode (ThreadedMotoServer), spoken
to by obstore and boto3 over HTTP exactly as a bucket in AWS would be. `env` is what a process
needs to use it (the standard AWS_* variables plus DISTILLERY_STORE_URL)."""

import socket
import uuid
from dataclasses import dataclass, field

import boto3
from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    port: int = field(default_factory=free_port)
    _server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def aws_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> "S3Server":
        """Start (or start again, on the same port: the buckets it held are gone)."""
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.endpoint, **_boto_keys(self.aws_env()))

    def bucket(self) -> str:
        """A new empty bucket."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def store_env(self, prefix: str = "distillery") -> dict[str, str]:
        """Everything a process needs to keep its durable bytes in a new bucket."""
        return {**self.aws_env(), "DISTILLERY_STORE_URL": f"s3://{self.bucket()}/{prefix}"}


def _boto_keys(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_REGION"],
    }
