"""gRPC channels to a site: plain text on loopback, mutual TLS with a kit folder.

A kit is the folder `campfire provision` hands each participant: ca.crt (the
project's CA), <name>.crt and <name>.key (its own certificate and key). With a
kit the channel trusts only the project's CA and presents the participant's
certificate; the site's certificate must name the host dialled, or
`server_name` when given (a site reached through a tunnel or a proxy).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import grpc

from campfire.errors import InvalidArgument

# The site accepts control messages up to 2 MiB (a 1 MiB chunk and framing); gRPC's
# default receive limit of 4 MiB would do, but say it so that nothing depends on defaults.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Kit:
    """The credentials of one participant, read from its kit folder."""

    name: str
    ca_certificate: bytes
    certificate: bytes
    private_key: bytes

    @classmethod
    def read(cls, directory: str | os.PathLike[str]) -> "Kit":
        """Reads ca.crt and the certificate named after the folder (or the only other .crt), with its key."""
        directory = os.fspath(directory)
        try:
            entries = os.listdir(directory)
        except OSError as error:
            raise InvalidArgument(f"kit {directory}: cannot read the folder: {error.strerror}") from error
        if "ca.crt" not in entries:
            raise InvalidArgument(f"kit {directory}: ca.crt is missing; a kit holds ca.crt, <name>.crt and <name>.key")
        certificates = sorted(entry for entry in entries if entry.endswith(".crt") and entry != "ca.crt")
        own = f"{os.path.basename(os.path.normpath(directory))}.crt"
        if own not in certificates:
            if len(certificates) != 1:
                raise InvalidArgument(f"kit {directory}: needs one <name>.crt besides ca.crt, found {certificates or 'none'}")
            own = certificates[0]
        name = own[: -len(".crt")]
        if f"{name}.key" not in entries:
            raise InvalidArgument(f"kit {directory}: {own} has no {name}.key beside it")

        def read(file: str) -> bytes:
            with open(os.path.join(directory, file), "rb") as handle:
                return handle.read()

        return cls(name=name, ca_certificate=read("ca.crt"), certificate=read(own), private_key=read(f"{name}.key"))


def is_loopback(target: str) -> bool:
    host = target.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_channel(
    target: str,
    kit: Optional[Kit] = None,
    server_name: Optional[str] = None,
    insecure: bool = False,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A channel to `target` (host:port): mutual TLS with `kit`; plain text only to loopback, or with `insecure`."""
    settings = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), *options]
    if kit is None:
        if not insecure and not is_loopback(target):
            raise InvalidArgument(f"refusing plain text to {target}, which is not loopback: pass a kit for mutual TLS, or insecure=True")
        return grpc.insecure_channel(target, options=settings)
    credentials = grpc.ssl_channel_credentials(kit.ca_certificate, kit.private_key, kit.certificate)
    if server_name:
        settings.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=settings)
