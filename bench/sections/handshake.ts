// 7. What identity costs once per participant, not per task: a fresh agent's
// connection from `new Agent()` to the site's welcome over mutual TLS (TCP,
// TLS handshake with both certificates checked, hello, welcome) against the
// same in plain text; and provisioning a project's CA and kits.
import { startEchoSite } from "../lib/campfire.js";
import { provisionBenchKits } from "../lib/kits.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { ratio, summarize } from "../lib/stats.js";

const PROVISIONED_CLIENTS = 10;

await runSection("Connection set-up and provisioning", async ({ quick }) => {
  const connections = quick ? 10 : 50;
  const repeats = quick ? 1 : 3;
  const kits = await provisionBenchKits(PROVISIONED_CLIENTS);
  progress(`provisioned a CA, the site and ${PROVISIONED_CLIENTS} clients in ${kits.provisionMs.toFixed(0)} ms`);
  // No standing agents: the peer only dials when told, one agent at a time.
  const plain = await startEchoSite(0);
  const secured = await startEchoSite(0, { tls: kits });
  const connect = async (site: typeof plain) => {
    site.agents.send(`connect ${connections}`);
    return JSON.parse(await site.agents.waitForLine("connect", 60_000)) as number[];
  };
  // The first connections of a process pay for module loading and JIT: not what a participant's join costs.
  await connect(plain);
  await connect(secured);
  const runs: Array<{ plainMs: number; tlsMs: number }> = [];
  // Alternating keeps a burst of load from the machine's other users out of one side only.
  for (let repeat = 0; repeat < repeats; repeat++) {
    const plainMs = summarize(await connect(plain)).p50Ms;
    const tlsMs = summarize(await connect(secured)).p50Ms;
    runs.push({ plainMs, tlsMs });
    progress(`connect p50 ${plainMs.toFixed(2)} ms in plain text, ${tlsMs.toFixed(2)} ms over mutual TLS`);
  }
  await Promise.all([plain.stop(), secured.stop()]);
  await kits.remove();

  const single = await provisionBenchKits(1);
  await single.remove();
  return {
    figures: [
      figure("agent connect to welcome p50 over mutual TLS", "ms", median(runs.map((run) => run.tlsMs)), {
        baseline: { name: "the same in plain text", value: median(runs.map((run) => run.plainMs)) },
        ratios: runs.map((run) => ratio(run.tlsMs, run.plainMs)),
      }),
      figure(`provision a project of ${PROVISIONED_CLIENTS} clients`, "ms", kits.provisionMs, { baseline: { name: "a project of 1 client", value: single.provisionMs } }),
    ],
    details: { connectionsPerRun: connections, runs, provisionedClients: PROVISIONED_CLIENTS },
  };
});
