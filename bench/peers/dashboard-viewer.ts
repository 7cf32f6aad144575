// Open dashboard pages, for the dashboard benchmark: reads the live streams of
// the overview and of job JOB_ID at DASHBOARD_URL, as two browser tabs would,
// and discards what arrives. Prints "ready" once both delivered a view.
const url = process.env.DASHBOARD_URL!;
const streams = [`${url}api/live`, `${url}api/live?job=${encodeURIComponent(process.env.JOB_ID!)}`];
let first = 0;
for (const stream of streams) {
  void (async () => {
    const response = await fetch(stream);
    if (!response.ok) throw new Error(`${stream}: HTTP ${response.status}`);
    let announced = false;
    for await (const _chunk of response.body!) {
      if (!announced && ++first === streams.length) console.log("ready");
      announced = true;
    }
  })();
}
process.stdin.on("end", () => process.exit(0)).resume();
