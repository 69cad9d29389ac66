"""A real S3 server on loopback for the tests: moto's server mode (ThreadedMotoServer), spoken
to by obstore and boto3 over HTTP exactly as a bucket in AWS would be. `env` is what a process
needs to use it (the standard AWS_* variables plus DISTILLERY_STORE_URL). A Link in front of
it is an outage a test can cause: cut, every connection through it is reset and new ones are
refused, while the server and what it holds stay up behind it; mended, it answers again."""

import contextlib
import socket
import struct
import threading
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


class Link:
    """A TCP relay to the S3 server on a port of its own: what the processes under test use."""

    def __init__(self, server: S3Server) -> None:
        self.server, self.port = server, free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def env(self, store_env: dict[str, str]) -> dict[str, str]:
        """`store_env` (S3Server.store_env) through this link."""
        return {**store_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}"}

    def mend(self) -> "Link":
        """Listen (again) and relay."""
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
            listener.close()
        with self._lock:
            held, self._open = self._open, set()
        for sock in held:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)  # wakes the relay's recv()
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.server.port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_relay, args=(src, dst), daemon=True).start()


def _relay(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(1 << 16):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
