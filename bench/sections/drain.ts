// 8. Drain: the site is sent SIGTERM while a FedAvg round over AGENTS agents
// is in flight (each task takes TASK_MS at its agent). It finishes the round,
// checkpoints and exits; a new site process on the same port and data
// directory resumes the job. Measured: the time to exit, and the time until a
// round completes after the restart, beside the same restart after SIGKILL
// (where the round in flight is lost and run again).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Peer, startPeer } from "../lib/peer.js";
import { figure, median, progress, runSection } from "../lib/section.js";

await runSection("Draining on SIGTERM", async ({ quick }) => {
  const agents = quick ? 10 : 100;
  const taskMs = quick ? 300 : 1_000;
  const cycles = quick ? 1 : 3;
  const dataDir = await mkdtemp(join(tmpdir(), "campfire-bench-drain-"));
  const env = { AGENTS: String(agents), DATA_DIR: dataDir, DRAIN_MS: "20000" };
  let site = await startPeer("job-site", { ...env, SUBMIT: "1" });
  const port = site.readyLine.split(" ")[1]!;
  const agentsPeer = await startPeer("echo-agents", { SITE_ADDRESS: `127.0.0.1:${port}`, AGENTS: String(agents), TASK_DELAY_MS: String(taskMs) });
  let round = Number(await site.waitForLine("round"));

  /** Waits for the next round to begin, then signals the site half a task later, with the round in flight. */
  const stopMidRound = async (signal: NodeJS.Signals) => {
    round = Number(await site.waitForLine("round"));
    await new Promise((resolve) => setTimeout(resolve, taskMs / 2));
    const signalled = performance.now();
    await site.kill(signal);
    return { inFlight: round, signalled, exitMs: performance.now() - signalled };
  };
  /** Restarts the site; resolves when a round completes on it (the round after the one it resumed with begins). */
  const restart = async (signalled: number) => {
    site = await startPeer("job-site", { ...env, PORT: port });
    const listeningMs = performance.now() - signalled;
    const resumedAt = Number(await waitForRound(site));
    const resumedMs = performance.now() - signalled;
    const completed = Number(await waitForRound(site));
    round = completed;
    return { resumedAt, listeningMs, resumedMs, roundMs: performance.now() - signalled };
  };

  type Restart = Omit<Awaited<ReturnType<typeof restart>>, "resumedAt"> & { roundsLost: number };
  const drained: Array<Restart & { exitMs: number }> = [];
  const killed: Restart[] = [];
  for (let cycle = 0; cycle < cycles; cycle++) {
    const term = await stopMidRound("SIGTERM");
    const afterTerm = await restart(term.signalled);
    const { resumedAt: termResumedAt, ...termTimes } = afterTerm;
    drained.push({ exitMs: term.exitMs, ...termTimes, roundsLost: term.inFlight + 1 - termResumedAt });
    progress(`SIGTERM in round ${term.inFlight}: exited after ${Math.round(term.exitMs)} ms; ${describe(afterTerm)}`);
    const kill = await stopMidRound("SIGKILL");
    const afterKill = await restart(kill.signalled);
    const { resumedAt: killResumedAt, ...killTimes } = afterKill;
    killed.push({ ...killTimes, roundsLost: kill.inFlight + 1 - killResumedAt });
    progress(`SIGKILL in round ${kill.inFlight}: ${describe(afterKill)}`);
  }
  await agentsPeer.stop();
  await site.stop();
  await rm(dataDir, { recursive: true, force: true });
  const roundAfterKill = { name: "the same after SIGKILL", value: median(killed.map((run) => run.roundMs)) };
  return {
    figures: [
      figure("SIGTERM with a round in flight: the site exits 0", "ms", median(drained.map((run) => run.exitMs)), { baseline: { name: "one task's duration", value: taskMs } }),
      figure("a round completes after the restart (from the signal)", "ms", median(drained.map((run) => run.roundMs)), { baseline: roundAfterKill }),
    ],
    details: {
      agents,
      taskMs,
      cycles,
      drained,
      killed,
      note: "times from the signal: the new site process listening, the job resumed (every agent back), a round completed; roundsLost: rounds in flight at the signal that ran again after the restart (drained: the round finishes and is checkpointed before exit; killed: it runs again)",
    },
  };
});

function describe(run: { resumedAt: number; listeningMs: number; resumedMs: number; roundMs: number }): string {
  return `new site listening after ${Math.round(run.listeningMs)} ms, resumed at round ${run.resumedAt} after ${Math.round(run.resumedMs)} ms, a round completed after ${Math.round(run.roundMs)} ms`;
}

/** The round number of the next "round" line. */
function waitForRound(peer: Peer): Promise<string> {
  return peer.waitForLine("round");
}
