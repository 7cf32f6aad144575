// A site as a process of its own, for the recovery benchmark: listens on
// 127.0.0.1:PORT (0: any port) and prints "ready <port>"; runs a job that sends
// an empty task to every one of AGENTS agents (clients bench-0 ..) at once,
// round after round, from the moment it starts. Prints "connected" once every
// agent is, "task" when the first task completes, "round" after each round.
// A task handed back by an agent that stops (the section stops the agents
// before the site) is sent again once its client is back.
import { AgentGone } from "../../services/site/errors.js";
import { SiteServer } from "../../services/site/site-server.js";
import { EMPTY_TASK_DATA } from "../lib/campfire.js";

const clients = Array.from({ length: Number(process.env.AGENTS) }, (_, index) => `bench-${index}`);
const site = await SiteServer.start({ address: `127.0.0.1:${process.env.PORT ?? 0}`, jobs: undefined });
console.log(`ready ${site.port}`);
process.stdin.on("end", () => process.exit(0)).resume();
void Promise.all(clients.map((client) => site.hub.waitForClient(client, { timeoutMs: 120_000 }))).then(() => console.log("connected"));
let firstTask = true;
for (;;) {
  await Promise.all(
    clients.map(async (client) => {
      for (;;) {
        try {
          await site.hub.sendTask(client, { taskName: "train", jobId: "bench", data: EMPTY_TASK_DATA }, { timeoutMs: 120_000 });
          break;
        } catch (error) {
          if (!(error instanceof AgentGone)) throw error;
        }
      }
      if (firstTask) console.log("task");
      firstTask = false;
    }),
  );
  console.log("round");
}
