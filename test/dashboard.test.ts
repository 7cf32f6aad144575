import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import type { Trainer, TrainerResult } from "../services/cli/agent-loop.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { HeldTrainer, JobSite, RunStatus, waitForJob, hasStatus } from "./helpers/job-site.js";
import { parseTokens } from "../services/site/session/auth.js";
import { shiftTrainer } from "./helpers/workflow-run.js";

/** Debian's chromium, which scripts/ensure-tools.sh installs where it can. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const missing = existsSync(CHROMIUM) ? undefined : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;
if (missing) console.warn(`SKIPPED test/dashboard.test.ts: ${missing}`);

const TOKEN = "dash-token";

/** shiftTrainer slowed down so that rounds take long enough to watch, logging a loss per round. */
function slowTrainer(shift: number): Trainer {
  const train = shiftTrainer(shift, 10);
  return async (task, tools): Promise<TrainerResult> => {
    if (task.taskName === "train") {
      await new Promise((resolve) => setTimeout(resolve, 400));
      tools.log({ loss: 1 / (1 + Number(task.data.meta?.current_round)) });
      tools.print(`trained round ${Number(task.data.meta?.current_round)}`);
    }
    return (await train(task, tools)) ?? {};
  };
}

describe.skipIf(missing)("the web dashboard, in a real Chromium", () => {
  let site: JobSite;
  let browser: Browser;
  let page: Page;
  const held = new HeldTrainer();

  beforeAll(async () => {
    site = await JobSite.start({ tokens: parseTokens(`${TOKEN}=alice:project_admin`), dashboard: { address: "127.0.0.1:0" } });
    site.serve("a", { trainer: slowTrainer(1) });
    site.serve("b", { trainer: slowTrainer(3) });
    site.serve("held", { trainer: held.trainer });
    await site.connected("a", "b", "held");
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  }, 60_000);

  afterAll(async () => {
    held.release();
    await browser?.close();
    await site?.stop();
  });

  const url = () => site.server.dashboard!.url;

  it("refuses data without credentials: 401 from the API, a sign-in form on the page", async () => {
    const anonymous = await fetch(`${url()}api/overview`);
    expect(anonymous.status).toBe(401);
    expect(((await anonymous.json()) as { error: string }).error).toMatch(/no token/);
    const wrong = await fetch(`${url()}api/jobs/x`, { headers: { authorization: "Bearer nope" } });
    expect(wrong.status).toBe(401);
    await page.goto(url());
    await page.locator("#login").waitFor({ state: "visible" });
    expect(await page.locator("#clients").count()).toBe(0);
  });

  it("shows the connected clients once signed in, on a phone-sized screen", async () => {
    await page.fill("#token", TOKEN);
    await page.click("#login button");
    for (const client of ["a", "b", "held"]) await page.locator(`#clients tr[data-client="${client}"]`).waitFor();
    expect(await page.locator("#caller").textContent()).toBe("alice (project_admin)");
    expect(await page.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(390);
  });

  it("follows a running job live: the round counter advances and the accuracy plot gains points, without a reload", async () => {
    const session = site.session({ token: TOKEN });
    const jobId = await session.submitJobDefinition(
      jobDefinition({ name: "watched", deployMap: { app: ["server", "a", "b"] }, apps: { app: { server: { workflow: "fedavg", args: { num_rounds: 5, validation_task_name: "validate" } }, client: {} } } }),
    );
    // A mark on the window: a reload would wipe it.
    await page.evaluate(`window.mark = "not reloaded"; location.hash = "#/jobs/${jobId}"`);
    const round = page.locator("#round");
    await expect.poll(() => round.textContent(), { timeout: 20_000 }).toMatch(/^[12] \/ 5$/);
    const first = await round.textContent();
    await expect.poll(() => round.textContent(), { timeout: 20_000 }).not.toBe(first);
    const points = () => page.locator("#global-plot").getAttribute("data-points").then(Number);
    await expect.poll(points, { timeout: 20_000 }).toBeGreaterThanOrEqual(1);
    const before = await points();
    await expect.poll(points, { timeout: 20_000 }).toBeGreaterThan(before);
    expect(await page.locator("#global-plot canvas").count()).toBeGreaterThan(0);
    await waitForJob(session, jobId, hasStatus(RunStatus.RUN_STATUS_FINISHED_COMPLETED), 60_000);
    await expect.poll(() => page.locator("#job-status").textContent(), { timeout: 10_000 }).toBe("FINISHED:COMPLETED");
    expect(await points()).toBe(5);
    expect(await page.evaluate("window.mark")).toBe("not reloaded");
    expect(await page.locator("#trainer-logs tbody tr").count()).toBe(10);
    expect(await page.locator("#trainer-logs").textContent()).toContain("trained round 4");
    // DASHBOARD_SCREENSHOTS=<dir> keeps pictures of the page (docs/ holds the README's).
    const shots = process.env.DASHBOARD_SCREENSHOTS;
    if (shots) {
      await page.screenshot({ path: `${shots}/dashboard-job-phone.png`, fullPage: true });
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.waitForTimeout(2_500);
      await page.screenshot({ path: `${shots}/dashboard-job.png`, fullPage: true });
      await page.setViewportSize({ width: 390, height: 844 });
    }
  }, 90_000);

  it("aborts a job from its page, after confirmation", async () => {
    const session = site.session({ token: TOKEN });
    const jobId = await session.submitJobDefinition(jobDefinition({ name: "to-abort", deployMap: { app: ["server", "held"] }, apps: { app: { server: { workflow: "broadcast", args: { task_name: "hold" } } } } }));
    await held.started();
    await page.evaluate(`location.hash = "#/jobs/${jobId}"`);
    const dialogs: string[] = [];
    page.once("dialog", (dialog) => {
      dialogs.push(dialog.message());
      void dialog.accept();
    });
    await page.locator("#abort").click();
    expect(dialogs[0]).toMatch(/Abort this job\?/);
    await waitForJob(session, jobId, hasStatus(RunStatus.RUN_STATUS_FINISHED_ABORTED), 20_000);
    await expect.poll(() => page.locator("#job-status").textContent(), { timeout: 10_000 }).toBe("FINISHED:ABORTED");
    expect(held.aborted).toHaveLength(1);
  }, 60_000);
});
