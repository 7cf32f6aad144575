"""An agent whose "training" adds 1 to every tensor: campfire.Agent in a dozen lines.

    python plus_one_agent.py --site 127.0.0.1:7443 --client-name hospital-a
    python plus_one_agent.py --site localhost:7443 --client-name hospital-a --kit kits/hospital-a

With --kit (the client's folder from `campfire provision`: ca.crt,
hospital-a.crt, hospital-a.key) it speaks mutual TLS; the site's certificate
must name the host dialled, or --server-name. It prints one line per event:
"welcomed ...", "task <id> ...", "result <id> <ACCEPTED|DUPLICATE>",
"bye <REASON> <message>", and "error <STATUS_CODE> <details>" when the site
refuses it. Exit status: 0 after the site's bye, 2 when refused, 3 when the
kit could not be read.
"""

from __future__ import annotations

import argparse
import sys

import campfire
from campfire.agent.v1 import agent_service_pb2 as agent_pb


def say(*words: object) -> None:
    print(*words, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", required=True, help="host:port of the site")
    parser.add_argument("--client-name", required=True, help="the client this agent acts for, as in deploy maps")
    parser.add_argument("--agent-id", help="unique per agent process (default: the client name and a random suffix)")
    parser.add_argument("--kit", help="the client's kit folder: mutual TLS; without it, plain text (loopback only)")
    parser.add_argument("--server-name", help="the name to check the site's certificate against, when it is not the host dialled")
    parser.add_argument("--allow-unsigned", action="store_true", help="with a kit, run jobs that no admin signed too (by default they are refused)")
    args = parser.parse_args()
    try:
        agent = campfire.Agent(args.site, args.client_name, agent_id=args.agent_id, kit=args.kit, server_name=args.server_name, require_signed_jobs=False if args.allow_unsigned else None)
    except campfire.InvalidArgument as error:
        say(f"error kit {error}")
        return 3
    with agent.start():
        try:
            agent.wait_until_connected()
            welcome = agent.welcome
            interval = welcome.heartbeat_interval.ToTimedelta().total_seconds()
            say(f"welcomed site={welcome.site_name} agent={welcome.agent_id} protocol={welcome.protocol_version} heartbeat_interval={interval}s")
            for task in agent.tasks():
                say(f"task {task.task_id} name={task.task_name} job={task.job_id} payload={task.payload_kind}")
                disposition = task.submit({name: array + 1 for name, array in task.arrays().items()}, meta={"NUM_STEPS_CURRENT_ROUND": 1})
                say(f"result {task.task_id} {disposition}")
        except campfire.CampfireError as error:
            say(f"error {error.code.name if error.code else 'NONE'} {error.details}")
            return 2
        bye = agent.bye
        say(f"bye {agent_pb.ByeReason.Name(bye.reason)} {bye.message}".rstrip() if bye else "closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
