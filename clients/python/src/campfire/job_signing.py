"""Signing a job definition with an admin's kit (campfire.common.v1.JobSignature).

The manifest is UTF-8 JSON with exactly the keys the proto documents: format,
project, name, deploy_map, min_clients, mandatory_clients, resource_spec,
apps (server_config, client_config, and each file's SHA-256 in hex), signer,
signed_at, nonce. The signature is ECDSA P-256 / SHA-256 over those bytes,
DER-encoded, with the key beside the admin's certificate. The project and the
signer's name come from the certificate (its subject alternative name
urn:campfire:<project>:<role>:<name>). The site verifies all of it at
SubmitJob; agents that require signed jobs verify it again before they run
the job. Needs the `cryptography` package (pip install 'campfire-fl[signing]').
"""

from __future__ import annotations

import datetime
import hashlib
import json
import secrets

from google.protobuf import json_format

from campfire.admin.v1 import job_pb2
from campfire.channels import Kit
from campfire.common.v1 import job_signature_pb2
from campfire.errors import InvalidJobDefinition
from campfire.identity import NotProvisioned, identity_of_pem

MANIFEST_FORMAT = "campfire.job-manifest.v1"


def _signer(kit: Kit) -> tuple[str, str]:
    """(project, name) from the kit's certificate."""
    try:
        who = identity_of_pem(kit.certificate)
    except NotProvisioned as error:
        raise InvalidJobDefinition(f"kit {kit.name}: {error}") from error
    return who.project, who.name


def _struct(app: job_pb2.App, field: str) -> object:
    return json_format.MessageToDict(getattr(app, field)) if app.HasField(field) else None


def manifest_content(definition: job_pb2.JobDefinition) -> dict:
    """What a manifest says of the job: everything but job_folder_name and the signature."""
    apps: dict[str, dict] = {}
    for app in definition.apps:
        if app.name in apps:
            raise InvalidJobDefinition(f"apps: app {app.name!r} appears twice; a signed job names each app once")
        files = {}
        for file in app.files:
            if file.path in files:
                raise InvalidJobDefinition(f"apps.{app.name}.files: {file.path!r} appears twice")
            files[file.path] = hashlib.sha256(file.content).hexdigest()
        apps[app.name] = {"server_config": _struct(app, "server_config"), "client_config": _struct(app, "client_config"), "files": files}
    deploy_map: dict[str, list[str]] = {}
    for deployment in definition.deploy_map:
        if deployment.app_name in deploy_map:
            raise InvalidJobDefinition(f"deploy_map: app {deployment.app_name!r} appears twice; list all its sites in one entry")
        deploy_map[deployment.app_name] = list(deployment.sites)
    return {
        "name": definition.name,
        "deploy_map": deploy_map,
        "min_clients": definition.min_clients,
        "mandatory_clients": list(definition.mandatory_clients),
        "resource_spec": {client: dict(requirement.resources) for client, requirement in definition.resource_spec.items()},
        "apps": apps,
    }


def sign_job_definition(definition: job_pb2.JobDefinition, kit: Kit) -> job_signature_pb2.JobSignature:
    """A fresh signature (signed now, with a random nonce) of the definition by the kit's admin."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as error:
        raise InvalidJobDefinition("signing jobs with a kit needs the cryptography package: pip install 'campfire-fl[signing]'") from error
    project, signer = _signer(kit)
    key = serialization.load_pem_private_key(kit.private_key, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidJobDefinition(f"kit {kit.name}: its key is not an ECDSA P-256 key; jobs are signed with P-256")
    now = datetime.datetime.now(datetime.timezone.utc)
    manifest = {
        "format": MANIFEST_FORMAT,
        "project": project,
        **manifest_content(definition),
        "signer": signer,
        "signed_at": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "nonce": secrets.token_hex(16),
    }
    encoded = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    signature = key.sign(encoded, ec.ECDSA(hashes.SHA256()))
    return job_signature_pb2.JobSignature(manifest=encoded, signature=signature, signer_certificate_pem=kit.certificate.decode("ascii"))
