// 8. The sidecar's trainer API: a task's round trip from the workflow to a
// trainer process and back, through `campfire agent --trainer-api` (a site
// here, the sidecar and the trainer each in a process of their own, the
// trainer on the generated stubs), against the same with the trainer inside
// the agent's process (the agent library, as `campfire agent --trainer`):
// an empty task, and a model that goes to the trainer and back in chunks.
import { startEchoSite, waitForAgents } from "../lib/campfire.js";
import { makeModel, modelBytes, weights } from "../lib/model.js";
import { startPeer } from "../lib/peer.js";
import { MiB } from "../lib/process-stats.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { type LatencySummary, ratio, timeSequential } from "../lib/stats.js";
import { SiteServer } from "../../services/site/site-server.js";

await runSection("Sidecar trainer API, one trainer", async ({ quick }) => {
  const roundTrips = quick ? 50 : 1_000;
  const warmup = quick ? 10 : 200;
  const modelRoundTrips = quick ? 2 : 10;
  const size = quick ? 2 * MiB : 32 * MiB;
  const repeats = quick ? 1 : 3;
  const model = weights(makeModel(size));

  const library = await startEchoSite(1);
  const site = await SiteServer.start({ address: "127.0.0.1:0", jobs: undefined });
  const sidecar = await startPeer("sidecar-agent", { SITE_ADDRESS: `127.0.0.1:${site.port}` });
  const trainer = await startPeer("api-trainer", { TRAINER_API: sidecar.readyLine.split(" ")[1]! });
  await waitForAgents(site, 1);
  const viaSidecar = async (data = model) => {
    const outcome = await site.hub.sendTask("bench-0", { taskName: "train", jobId: "bench", data }, { timeoutMs: 120_000 });
    if (data.tensors.length && modelBytes(outcome.data?.tensors ?? []) !== modelBytes(data.tensors)) throw new Error("a result came back short");
  };
  const viaLibrary = async (data = model) => {
    const outcome = await library.task("bench-0", data);
    if (data.tensors.length && modelBytes(outcome.data?.tensors ?? []) !== modelBytes(data.tensors)) throw new Error("a result came back short");
  };
  const empty = weights([]);
  const runs: Array<{ sidecar: LatencySummary; library: LatencySummary; sidecarModel: LatencySummary; libraryModel: LatencySummary }> = [];
  for (let repeat = 0; repeat < repeats; repeat++) {
    const libraryRun = await timeSequential(roundTrips, warmup, () => viaLibrary(empty));
    const sidecarRun = await timeSequential(roundTrips, warmup, () => viaSidecar(empty));
    const libraryModel = await timeSequential(modelRoundTrips, 1, () => viaLibrary());
    const sidecarModel = await timeSequential(modelRoundTrips, 1, () => viaSidecar());
    runs.push({ sidecar: sidecarRun, library: libraryRun, sidecarModel, libraryModel });
    progress(`empty task p50 ${sidecarRun.p50Ms.toFixed(3)} ms vs ${libraryRun.p50Ms.toFixed(3)} ms in-process; ${size / MiB} MiB model p50 ${sidecarModel.p50Ms.toFixed(0)} ms vs ${libraryModel.p50Ms.toFixed(0)} ms`);
  }
  await trainer.stop();
  await sidecar.stop();
  await site.stop(500);
  await library.stop();
  const figures = [
    figure("empty task round trip p50 via the sidecar", "ms", median(runs.map((run) => run.sidecar.p50Ms)), {
      baseline: { name: "trainer in the agent's process", value: median(runs.map((run) => run.library.p50Ms)) },
      ratios: runs.map((run) => ratio(run.sidecar.p50Ms, run.library.p50Ms)),
    }),
    figure(`${size / MiB} MiB model round trip p50 via the sidecar`, "ms", median(runs.map((run) => run.sidecarModel.p50Ms)), {
      baseline: { name: "trainer in the agent's process", value: median(runs.map((run) => run.libraryModel.p50Ms)) },
      ratios: runs.map((run) => ratio(run.sidecarModel.p50Ms, run.libraryModel.p50Ms)),
    }),
  ];
  return { figures, details: { roundTrips, modelRoundTrips, modelBytes: size, runs } };
});
