"""The agent's check of a job's signature, before the trainer sees any of its tasks.

An agent with a kit runs, by default, only jobs signed by an admin of its own
project (campfire.common.v1.JobSignature; Task.job_signature): the signer's
certificate issued by the kit's CA and valid when it signed, the ECDSA P-256
signature over the manifest, the signer an admin of this project whose
organisation and role the client allows, and this client in the signed
deploy_map. A job that fails is answered RETURN_CODE_UNAUTHORIZED with the
reason ("<client> refused the job: ..."), which the site records in the job.
The verdict is kept per job and signature. Not checked here (the TypeScript
agent checks them too): that each task's name is one the signed workflow
sends, and that the task's meta (total_rounds, client_config) matches the
manifest.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
from typing import Optional, Sequence

from campfire.agent.v1 import agent_service_pb2 as agent_pb
from campfire.channels import Kit
from campfire.common.v1 import job_signature_pb2
from campfire.errors import InvalidArgument

MANIFEST_FORMAT = "campfire.job-manifest.v1"
ADMIN_ROLES = ("project_admin", "org_admin", "lead", "member")
# Who may submit by default: the roles that may submit jobs in the reference's default policy.
DEFAULT_ROLES = ("project_admin", "lead")
CLOCK_SKEW = datetime.timedelta(minutes=5)
REMEMBERED_JOBS = 32
_URN = "urn:campfire:"


class _Refused(Exception):
    pass


def _identity(certificate) -> dict:  # noqa: ANN001 - a cryptography x509.Certificate
    """name, org, role, project of a certificate `campfire provision` issued."""
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
        if uri.startswith(_URN):
            project, uri_role, uri_name = uri[len(_URN) :].split(":", 2)
            if uri_role == role and uri_name == name and name and org:
                return {"name": name, "org": org, "role": role, "project": project}
    raise _Refused(f"the certificate of {name or '(no CN)'} does not say {_URN}<project>:{role}:{name}: it was not issued by campfire provision")


def _utc(certificate, attribute: str) -> datetime.datetime:  # noqa: ANN001
    value = getattr(certificate, f"{attribute}_utc", None)
    return value if value is not None else getattr(certificate, attribute).replace(tzinfo=datetime.timezone.utc)


class JobGate:
    def __init__(self, kit: Optional[Kit], client_name: str, require_signed_jobs: Optional[bool] = None, orgs: Sequence[str] = ("*",), roles: Sequence[str] = DEFAULT_ROLES) -> None:
        self.client_name = client_name
        self.require_signed_jobs = kit is not None if require_signed_jobs is None else require_signed_jobs
        self.orgs = tuple(orgs)
        self.roles = tuple(roles)
        self._ca = None
        self._project: Optional[str] = None
        self._verdicts: collections.OrderedDict[str, Optional[str]] = collections.OrderedDict()
        if kit is None:
            if self.require_signed_jobs:
                raise InvalidArgument("require_signed_jobs needs the agent's kit, to check signatures against its project's CA")
            return
        try:
            from cryptography import x509
        except ImportError as error:
            if self.require_signed_jobs:
                raise InvalidArgument("an agent with a kit checks signed jobs, which needs the cryptography package: pip install 'campfire-fl[signing]' (or require_signed_jobs=False)") from error
            return
        self._ca = x509.load_pem_x509_certificate(kit.ca_certificate)
        self._project = _identity(x509.load_pem_x509_certificate(kit.certificate))["project"]

    def refusal(self, task: agent_pb.Task) -> Optional[str]:
        """Why this client will not run the task's job, or None when it may."""
        if task.HasField("job_signature") and self._ca is not None:
            signature = task.job_signature
            key = f"{task.job_id}\n{hashlib.sha256(signature.SerializeToString(deterministic=True)).hexdigest()}"
            if key not in self._verdicts:
                try:
                    self._verdicts[key] = self._check(signature)
                except _Refused as refused:
                    self._verdicts[key] = str(refused)
                while len(self._verdicts) > REMEMBERED_JOBS:
                    self._verdicts.popitem(last=False)
            return self._verdicts[key]
        if self.require_signed_jobs:
            return f"job {task.job_id} is not signed, and this client runs only jobs signed by an admin of the project (require_signed_jobs); submit it with an admin's kit"
        return None

    def _check(self, signature: job_signature_pb2.JobSignature) -> Optional[str]:
        from cryptography import exceptions, x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        prefix = "the job's signature does not hold: "
        try:
            signer = x509.load_pem_x509_certificate(signature.signer_certificate_pem.encode())
        except ValueError as error:
            raise _Refused(f"{prefix}signer_certificate_pem is not a PEM X.509 certificate ({error})") from error
        try:
            signer.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, exceptions.InvalidSignature) as error:
            raise _Refused(f"{prefix}the signer's certificate ({signer.subject.rfc4514_string()}) was not issued by this project's CA") from error
        key = signer.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise _Refused(f"{prefix}the signer's certificate holds no ECDSA P-256 key")
        try:
            key.verify(signature.signature, signature.manifest, ec.ECDSA(hashes.SHA256()))
        except exceptions.InvalidSignature as error:
            raise _Refused(f"{prefix}the signature does not verify over the manifest: it was altered after signing, or signed with another key") from error
        try:
            manifest = json.loads(signature.manifest.decode("utf-8"))
            assert isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT
            signed_at = datetime.datetime.fromisoformat(str(manifest["signed_at"]).replace("Z", "+00:00"))
            deploy_map = manifest["deploy_map"]
            assert isinstance(deploy_map, dict)
        except (ValueError, KeyError, AssertionError, UnicodeDecodeError) as error:
            raise _Refused(f"{prefix}the manifest is not a {MANIFEST_FORMAT} manifest") from error
        who = _identity(signer)
        if who["role"] not in ADMIN_ROLES:
            raise _Refused(f"{prefix}the job is signed by {who['name']} ({who['role']}): only an admin's certificate may sign jobs")
        if who["project"] != self._project or manifest.get("project") != self._project:
            raise _Refused(f"{prefix}it was signed for project {manifest.get('project')!r} by a certificate of project {who['project']!r}, not this client's {self._project!r}")
        if manifest.get("signer") != who["name"]:
            raise _Refused(f"{prefix}manifest.signer {manifest.get('signer')!r} is not the signer's certificate's name {who['name']!r}")
        if signed_at > datetime.datetime.now(datetime.timezone.utc) + CLOCK_SKEW:
            raise _Refused(f"{prefix}manifest.signed_at {manifest['signed_at']} is in the future; check the signer's clock")
        for what, certificate in (("the signer's certificate", signer), ("the project CA", self._ca)):
            if not _utc(certificate, "not_valid_before") <= signed_at <= _utc(certificate, "not_valid_after"):
                raise _Refused(f"{prefix}{what} was not valid at manifest.signed_at {manifest['signed_at']}")
        submitter = f"its submitter {who['name']} (org {who['org']}, {who['role']})"
        if "*" not in self.orgs and who["org"] not in self.orgs:
            return f"{submitter} is of organisation {who['org']}, and this client's policy allows jobs from organisations {', '.join(self.orgs)}"
        if "*" not in self.roles and who["role"] not in self.roles:
            return f"{submitter} has the role {who['role']}, and this client's policy allows jobs from the roles {', '.join(self.roles)}"
        if not any(self.client_name in sites or "@ALL" in sites for sites in deploy_map.values() if isinstance(sites, list)):
            return f"the signed job does not deploy this client: {self.client_name} is not in its deploy_map ({json.dumps(deploy_map)}); the site altered the job or sent a task of another"
        return None
