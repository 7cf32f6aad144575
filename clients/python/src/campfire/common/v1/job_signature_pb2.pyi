from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class JobSignature(_message.Message):
    __slots__ = ("manifest", "signature", "signer_certificate_pem")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    signature: bytes
    signer_certificate_pem: str
    def __init__(self, manifest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., signer_certificate_pem: _Optional[str] = ...) -> None: ...
