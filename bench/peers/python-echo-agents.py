"""campfire.Agent (the Python package) answering every task with its own data:
the Python side of the bench's python section, as bench/peers/echo-agents.ts is
the TypeScript side. AGENTS agents (threads of this process) join SITE_ADDRESS
as clients bench-0 onwards. Prints "ready" once all are welcomed. Commands on
stdin: "reset-peak", "peak-rss" (answers "peak-rss <bytes>"). Exits when stdin
closes.
"""

import os
import re
import sys
import threading

import campfire

count = int(os.environ.get("AGENTS", "1"))
site = os.environ["SITE_ADDRESS"]
agents = [campfire.Agent(site, f"bench-{index}", submit_timeout=600).start() for index in range(count)]


def echo(agent: campfire.Agent) -> None:
    try:
        for task in agent.tasks():
            task.submit(task.data)
    except campfire.AgentClosed:
        pass  # closed with a task in flight: the run is over


for agent in agents:
    threading.Thread(target=echo, args=(agent,), daemon=True).start()
for agent in agents:
    agent.wait_until_connected(60)
print("ready", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "reset-peak":
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    elif command == "peak-rss":
        with open("/proc/self/status") as status:
            peak = re.search(r"^VmHWM:\s+(\d+) kB", status.read(), re.M)
        print(f"peak-rss {int(peak.group(1)) * 1024 if peak else 0}", flush=True)
for agent in agents:
    agent.close()
