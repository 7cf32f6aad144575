"""Job folders (NVFLARE-style) into campfire.admin.v1.JobDefinition.

    <folder>/meta.json                            name, deploy_map, resource_spec, min_clients, mandatory_clients
    <folder>/<app>/config/config_fed_server.json  {"workflow": "<name>", "args": {...}} (the app on "server")
    <folder>/<app>/config/config_fed_client.json  passed to the clients that run the app
    <folder>/<app>/**                             other files of the app (an initial model, ...), sent along

Only the apps named in deploy_map are read. Problems raise
InvalidJobDefinition naming the file and what is wrong; the site checks the
rest (workflow names and arguments) at submit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from campfire.admin.v1 import job_pb2
from campfire.errors import InvalidJobDefinition

META_FILE = "meta.json"
SERVER_CONFIG = "config/config_fed_server.json"
CLIENT_CONFIG = "config/config_fed_client.json"


def _json(path: Path, shown: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidJobDefinition(f"{shown} is missing") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidJobDefinition(f"{shown}: not valid JSON: {error}") from error


def _strings(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidJobDefinition(f"{field}: must be a list of strings, got {json.dumps(value)}")
    return value


def read_job_folder(folder: str | os.PathLike[str]) -> job_pb2.JobDefinition:
    root = Path(folder).resolve()
    shown_meta = f"{folder}/{META_FILE}"
    meta = _json(root / META_FILE, shown_meta)
    if not isinstance(meta, dict):
        raise InvalidJobDefinition(f"{shown_meta}: must hold a JSON object")
    deploy_map = meta.get("deploy_map")
    if not isinstance(deploy_map, dict) or not deploy_map:
        raise InvalidJobDefinition(f'{shown_meta}: deploy_map: must be an object of app name -> site names, for example {{"app": ["@ALL"]}}')
    definition = job_pb2.JobDefinition(name=meta.get("name") or root.name, job_folder_name=root.name)
    for app_name, sites in deploy_map.items():
        definition.deploy_map.add(app_name=app_name, sites=_strings(sites, f"{shown_meta}: deploy_map.{app_name}"))
        definition.apps.append(_read_app(root, app_name, str(folder)))
    for client, resources in (meta.get("resource_spec") or {}).items():
        if not isinstance(resources, dict) or not all(isinstance(amount, (int, float)) for amount in resources.values()):
            raise InvalidJobDefinition(f"{shown_meta}: resource_spec.{client}: must be an object of resource name -> number")
        definition.resource_spec[client].resources.update(resources)
    min_clients = meta.get("min_clients", 0)
    if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 0:
        raise InvalidJobDefinition(f"{shown_meta}: min_clients: must be a non-negative integer, got {json.dumps(min_clients)}")
    definition.min_clients = min_clients
    definition.mandatory_clients.extend(_strings(meta.get("mandatory_clients", []), f"{shown_meta}: mandatory_clients"))
    return definition


def _read_app(root: Path, app_name: str, folder: str) -> job_pb2.App:
    app_dir = root / app_name
    if not app_dir.is_dir():
        raise InvalidJobDefinition(f'deploy_map in {folder}/{META_FILE} names app "{app_name}", but {folder}/{app_name}/ does not exist')
    app = job_pb2.App(name=app_name)
    files: list[job_pb2.AppFile] = []
    for path in sorted(app_dir.rglob("*")):
        relative = path.relative_to(app_dir).as_posix()
        if path.is_symlink():
            raise InvalidJobDefinition(f"{folder}/{app_name}/{relative} is a symbolic link; copy the file into the job folder instead")
        if not path.is_file():
            continue
        if relative in (SERVER_CONFIG, CLIENT_CONFIG):
            config = _json(path, f"{app_name}/{relative}")
            if not isinstance(config, dict):
                raise InvalidJobDefinition(f"{app_name}/{relative}: must hold a JSON object")
            (app.server_config if relative == SERVER_CONFIG else app.client_config).update(config)
        else:
            files.append(job_pb2.AppFile(path=relative, content=path.read_bytes()))
    if not app.HasField("server_config") and not app.HasField("client_config"):
        raise InvalidJobDefinition(f'app "{app_name}" in {folder} has neither {SERVER_CONFIG} nor {CLIENT_CONFIG}; add the one(s) its sites need')
    app.files.extend(sorted(files, key=lambda file: file.path))
    return app
