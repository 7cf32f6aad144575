"""Who a certificate of `campfire provision` names: its subject (CN name, O
organisation, OU role) and its subject alternative name
urn:campfire:<project>:<role>:<name>, which must agree. Needs `cryptography`."""

from __future__ import annotations

from dataclasses import dataclass

URN = "urn:campfire:"


@dataclass(frozen=True)
class Identity:
    name: str
    org: str
    role: str
    project: str


class NotProvisioned(ValueError):
    """The certificate does not name a participant the way campfire provision writes it."""


def identity_of(certificate) -> Identity:  # noqa: ANN001 - a cryptography x509.Certificate
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    def field(oid) -> str:  # noqa: ANN001
        values = certificate.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    name, org, role = field(NameOID.COMMON_NAME), field(NameOID.ORGANIZATION_NAME), field(NameOID.ORGANIZATIONAL_UNIT_NAME)
    try:
        uris = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    for uri in uris:
        if uri.startswith(URN):
            project, uri_role, uri_name = uri[len(URN) :].split(":", 2)
            if uri_role == role and uri_name == name and name and org:
                return Identity(name=name, org=org, role=role, project=project)
    raise NotProvisioned(f"the certificate of {name or '(no CN)'} does not say {URN}<project>:{role}:{name}: it was not issued by campfire provision")


def identity_of_pem(pem: bytes) -> Identity:
    from cryptography import x509

    return identity_of(x509.load_pem_x509_certificate(pem))
