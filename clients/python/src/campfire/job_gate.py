"""The agent's check of a job's signature, before the trainer sees any of its tasks.

An agent with a kit runs, by default, only jobs signed by an admin of its own
project (campfire.common.v1.JobSignature; Task.job_signature): the signer's
certificate issued by the kit's CA and valid when it signed, the ECDSA P-256
signature over the manifest, the signer an admin of this project whose
organisation and role the client allows, and this client in the signed
deploy_map. A job that fails is answered RETURN_CODE_UNAUTHORIZED with the
reason ("<client> refused the job: ..."), which the site records in the job.
The verdict is kept per job and signature. Then, per task: its name must be
one the signed workflow sends, and what its data's meta says of the job
(total_rounds, current_round, client_config) must match the manifest, so a
site cannot run other tasks or another config under an admin's signature.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from google.protobuf import json_format

from campfire.agent.v1 import agent_service_pb2 as agent_pb
from campfire.channels import Kit
from campfire.common.v1 import exchange_pb2, job_signature_pb2
from campfire.errors import InvalidArgument
from campfire.identity import NotProvisioned, identity_of, identity_of_pem

MANIFEST_FORMAT = "campfire.job-manifest.v1"
ADMIN_ROLES = ("project_admin", "org_admin", "lead", "member")
# Who may submit by default: the roles that may submit jobs in the reference's default policy.
DEFAULT_ROLES = ("project_admin", "lead")
CLOCK_SKEW = datetime.timedelta(minutes=5)
REMEMBERED_JOBS = 32


class _Refused(Exception):
    pass


@dataclass(frozen=True)
class SignedJob:
    """A job whose signature held: what its admin signed."""

    manifest: dict
    workflow: Optional[str]
    app: str
    client_config: Optional[dict]


def _app_of(deploy_map: dict, site: str) -> Optional[str]:
    """The app a site runs under a deploy map: the entry naming it, else the "@ALL" one."""
    for wanted in (site, "@ALL"):
        for app, sites in deploy_map.items():
            if isinstance(sites, list) and wanted in sites:
                return app
    return None


def workflow_facts(job: SignedJob) -> tuple[Optional[list[str]], Optional[tuple[int, int]]]:
    """The task names a built-in workflow's signed config sends and the rounds [first, end) it runs, with the workflows' defaults."""
    server_app = _app_of(job.manifest["deploy_map"], "server")
    config = (job.manifest.get("apps", {}).get(server_app) or {}).get("server_config") or {} if server_app else {}
    args = config.get("args") if isinstance(config.get("args"), dict) else {}

    def text(key: str, default: str) -> str:
        return args[key] if isinstance(args.get(key), str) else default

    def count(key: str, default: int) -> int:
        value = args.get(key)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    if job.workflow == "fedavg":
        names = [text("train_task_name", "train")]
        if isinstance(args.get("validation_task_name"), str):
            names.append(args["validation_task_name"])
        if args.get("cross_site_eval") is True:
            names += ["submit_model", "validate"]
        first = count("start_round", 0)
        return list(dict.fromkeys(names)), (first, first + count("num_rounds", 5))
    if job.workflow == "cyclic":
        return [text("train_task_name", "train")], (0, count("num_rounds", 3))
    if job.workflow == "cross_site_eval":
        return list(dict.fromkeys([text("submit_model_task_name", "submit_model"), text("validation_task_name", "validate")])), None
    if job.workflow == "broadcast" and isinstance(args.get("task_name"), str):
        return [args["task_name"]], None
    return None, None


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
        self._verdicts: collections.OrderedDict[str, Union[SignedJob, str]] = collections.OrderedDict()
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
        self._project = identity_of_pem(kit.certificate).project

    def _verdict(self, task: agent_pb.Task) -> Union[SignedJob, str, None]:
        """The signed job, why its signature does not hold, or None for an unsigned task."""
        if not task.HasField("job_signature") or self._ca is None:
            return None
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

    def refusal(self, task: agent_pb.Task) -> Optional[str]:
        """Why this client will not run the task (its job's signature, signer, deploy map, the task's name), or None."""
        verdict = self._verdict(task)
        if isinstance(verdict, str):
            return verdict
        if verdict is None:
            if self.require_signed_jobs:
                return f"job {task.job_id} is not signed, and this client runs only jobs signed by an admin of the project (require_signed_jobs); submit it with an admin's kit"
            return None
        names, _ = workflow_facts(verdict)
        if names is not None and task.task_name not in names:
            return f"the task does not match the signed job: task {task.task_name!r} is not one the signed workflow {verdict.workflow} sends ({', '.join(names)}); the site altered the job or sent a task of its own"
        return None

    def client_config(self, task: agent_pb.Task) -> tuple[dict, Optional[str]]:
        """The job's client config for this task (its filters, the trainer's settings), or why the task is refused.

        For a signed job it is the signed manifest's client_config: a task
        whose Task.client_config says otherwise is refused. Unsigned: the task's
        own ({} when the site sent none).
        """
        sent = json_format.MessageToDict(task.client_config) if task.HasField("client_config") else {}
        job = self._verdict(task)
        if not isinstance(job, SignedJob):
            return sent, None
        signed = job.client_config or {}
        if sent != signed:
            return signed, f"the task does not match the signed job: its client_config is {json.dumps(sent)}, the signed config_fed_client.json of app {job.app} has {json.dumps(signed)}; the site altered the job after it was signed"
        return signed, None

    def data_refusal(self, task: agent_pb.Task, data: exchange_pb2.DataExchange) -> Optional[str]:
        """Why the task's data contradicts its signed job (rounds, client config), or None."""
        job = self._verdict(task)
        if not isinstance(job, SignedJob):
            return None
        meta = json_format.MessageToDict(data.meta) if data.HasField("meta") else {}

        def mismatch(what: str) -> str:
            return f"the task does not match the signed job: {what}; the site altered the job after it was signed"

        _, rounds = workflow_facts(job)
        if rounds is not None:
            first, end = rounds
            if "total_rounds" in meta and meta["total_rounds"] != end:
                return mismatch(f"the task says total_rounds {meta['total_rounds']}, the signed {job.workflow} config gives {end}")
            current = meta.get("current_round")
            if current is not None and (not isinstance(current, (int, float)) or not first <= current < end):
                return mismatch(f"the task is for round {current}, the signed {job.workflow} config runs rounds {first} to {end - 1}")
        if "client_config" in meta and meta["client_config"] != job.client_config:
            return mismatch(f"its meta client_config is {json.dumps(meta['client_config'])}, the signed config_fed_client.json of app {job.app} has {json.dumps(job.client_config)}")
        return None

    def _check(self, signature: job_signature_pb2.JobSignature) -> Union[SignedJob, str]:
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
        try:
            who = identity_of(signer)
        except NotProvisioned as error:
            raise _Refused(f"{prefix}{error}") from error
        if who.role not in ADMIN_ROLES:
            raise _Refused(f"{prefix}the job is signed by {who.name} ({who.role}): only an admin's certificate may sign jobs")
        if who.project != self._project or manifest.get("project") != self._project:
            raise _Refused(f"{prefix}it was signed for project {manifest.get('project')!r} by a certificate of project {who.project!r}, not this client's {self._project!r}")
        if manifest.get("signer") != who.name:
            raise _Refused(f"{prefix}manifest.signer {manifest.get('signer')!r} is not the signer's certificate's name {who.name!r}")
        if signed_at > datetime.datetime.now(datetime.timezone.utc) + CLOCK_SKEW:
            raise _Refused(f"{prefix}manifest.signed_at {manifest['signed_at']} is in the future; check the signer's clock")
        for what, certificate in (("the signer's certificate", signer), ("the project CA", self._ca)):
            if not _utc(certificate, "not_valid_before") <= signed_at <= _utc(certificate, "not_valid_after"):
                raise _Refused(f"{prefix}{what} was not valid at manifest.signed_at {manifest['signed_at']}")
        submitter = f"its submitter {who.name} (org {who.org}, {who.role})"
        if "*" not in self.orgs and who.org not in self.orgs:
            return f"{submitter} is of organisation {who.org}, and this client's policy allows jobs from organisations {', '.join(self.orgs)}"
        if "*" not in self.roles and who.role not in self.roles:
            return f"{submitter} has the role {who.role}, and this client's policy allows jobs from the roles {', '.join(self.roles)}"
        app = _app_of(deploy_map, self.client_name)
        if app is None:
            return f"the signed job does not deploy this client: {self.client_name} is not in its deploy_map ({json.dumps(deploy_map)}); the site altered the job or sent a task of another"
        apps = manifest.get("apps") if isinstance(manifest.get("apps"), dict) else {}
        server_app = _app_of(deploy_map, "server")
        server_config = (apps.get(server_app) or {}).get("server_config") if server_app else None
        workflow = server_config.get("workflow") if isinstance(server_config, dict) and isinstance(server_config.get("workflow"), str) else None
        return SignedJob(manifest=manifest, workflow=workflow, app=app, client_config=(apps.get(app) or {}).get("client_config"))
