import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runScenario, SCENARIO_TIMEOUT_MS } from "./harness.js";
import { LANGUAGES, type Language, findRunners, type Runner } from "./runners.js";
import { SCENARIOS } from "./scenarios.js";

/**
 * The conformance suite: every scenario of CONFORMANCE (test/conformance/README.md)
 * for every language whose runner is here, against a real site per run, with
 * one table at the end: scenario x language.
 */
const verdicts = new Map<string, string>();
/** Why each failed run failed (its first line), printed under the table. */
const failures: string[] = [];
let runners: Runner[] = [];

beforeAll(async () => {
  runners = await findRunners();
  for (const runner of runners) {
    if ("skipped" in runner) console.log(`conformance: ${runner.language} SKIPPED: ${runner.skipped}`);
    if ("broken" in runner) console.log(`conformance: ${runner.language} FAILS (runner could not be prepared): ${runner.broken}`);
  }
}, 360_000);

afterAll(() => {
  const width = Math.max(...SCENARIOS.map((scenario) => scenario.name.length));
  const lines = [`${"scenario".padEnd(width)}  ${LANGUAGES.map((language) => language.padEnd(7)).join(" ")}`];
  for (const scenario of SCENARIOS) {
    lines.push(`${scenario.name.padEnd(width)}  ${LANGUAGES.map((language) => (verdicts.get(`${scenario.name} ${language}`) ?? "-").padEnd(7)).join(" ")}`);
  }
  const why = failures.length ? `\nfailures:\n${failures.join("\n")}\n` : "";
  console.log(`\nconformance: scenario x language\n${lines.join("\n")}\n${why}`);
});

describe.each(LANGUAGES)("conformance %s", (language: Language) => {
  for (const scenario of SCENARIOS) {
    const name = scenario.name;
    it(name, async (context) => {
      const runner = runners.find((candidate) => candidate.language === language)!;
      const key = `${name} ${language}`;
      if ("skipped" in runner) {
        verdicts.set(key, "SKIPPED");
        context.skip(`${language} runner: ${runner.skipped}`);
        return;
      }
      const notApplicable = scenario.notApplicable?.(language);
      if (notApplicable) {
        verdicts.set(key, "n/a");
        console.log(`conformance: ${key} not applicable: ${notApplicable}`);
        context.skip(notApplicable);
        return;
      }
      if ("broken" in runner) {
        verdicts.set(key, "fail");
        expect.fail(`${language} runner could not be prepared: ${runner.broken}`);
      }
      const failure = await runScenario(scenario, runner.command, `conformance-${language}`);
      verdicts.set(key, failure ? "fail" : "pass");
      if (failure) failures.push(`  ${key}: ${failure.split("\n")[0]}`);
      expect(failure, failure).toBeUndefined();
    }, SCENARIO_TIMEOUT_MS + 30_000);
  }
});
