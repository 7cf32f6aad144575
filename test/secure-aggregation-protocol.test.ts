// The secure aggregation protocol's state machines (services/secure-aggregation)
// driven against each other in one process, without gRPC: the site's
// SecureRound and each client's SecureAggregationClient exchange the phases'
// DataExchanges as the agent and the workflow would. The end-to-end tests on
// real processes are in secure-aggregation.test.ts.
import { describe, expect, it } from "vitest";
import { DataKind } from "../gen/campfire/common/v1/exchange.js";
import { ProtocolViolation, RoundUnrecoverable } from "../services/secure-aggregation/errors.js";
import { SecureAggregationClient } from "../services/secure-aggregation/client.js";
import { bytesTensor, TENSORS } from "../services/secure-aggregation/protocol.js";
import { Quantization } from "../services/secure-aggregation/quantization.js";
import { SecureRound } from "../services/secure-aggregation/site-round.js";
import { silentLogger } from "../services/shared/logger.js";
import type { DataExchange } from "../services/shared/payload.js";
import { ReturnCode } from "../services/shared/return-codes.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";

const JOB = "job-1";
const weights = (values: number[]): DataExchange => ({ kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("b", [2], Float32Array.from(values.slice(0, 2))), float32Tensor("a", [values.length - 2], Float32Array.from(values.slice(2)))], values: undefined, meta: {} });

/** Runs one round among `updates` (client -> values); `drop` leaves after sharing keys; `tamper` may change a message on its way to the site. */
async function runRound(updates: Record<string, number[]>, options: { drop?: string[]; neighbours?: number; tamper?: (phase: string, client: string, data: DataExchange) => DataExchange } = {}) {
  const names = Object.keys(updates);
  const clients = new Map(names.map((name) => [name, new SecureAggregationClient(name, silentLogger)]));
  const site = new SecureRound({ jobId: JOB, round: 0, clients: names, clipRange: 8, neighbours: options.neighbours });
  const refused: Record<string, string> = {};
  const tamper = options.tamper ?? ((_phase, _client, data) => data);
  const ask = async (phase: string, targets: string[], task: (client: string) => DataExchange, accept: (client: string, data: DataExchange) => void) => {
    for (const client of targets) {
      const interception = clients.get(client)!.intercept({ taskId: `${phase}-${client}`, jobId: JOB }, task(client));
      if (!interception || !("answer" in interception)) throw new Error(`${phase} was not answered by the protocol`);
      try {
        accept(client, tamper(phase, client, await interception.answer));
      } catch (error) {
        if (!(error instanceof ProtocolViolation)) throw error;
        refused[client] = error.message;
      }
    }
  };
  await ask("advertise", names, () => site.advertiseTask(), (client, data) => site.acceptKeys(client, data));
  await ask("share", site.beginSharing(), (client) => site.shareKeysTask(client), (client, data) => site.acceptShares(client, data));
  const participants = site.beginMasking().filter((client) => !options.drop?.includes(client));
  for (const client of participants) {
    const interception = clients.get(client)!.intercept({ taskId: `train-${client}`, jobId: JOB }, site.maskedInputTask(weights([0, 0, 0])));
    if (!interception || !("trainerData" in interception)) throw new Error("the training task was not intercepted");
    expect(interception.trainerData.meta).toEqual({});
    const sealed = await clients.get(client)!.seal(`train-${client}`, weights(updates[client]!), ReturnCode.RETURN_CODE_OK);
    try {
      const data = tamper("masked", client, sealed.data!);
      site.acceptMaskedInput(client, { kind: data.kind, tensors: data.tensors });
    } catch (error) {
      if (!(error instanceof ProtocolViolation)) throw error;
      refused[client] = error.message;
    }
  }
  await ask("unmask", site.beginUnmasking(), (client) => site.unmaskTask(client), (client, data) => site.acceptUnmaskShares(client, data));
  const result = await site.finish();
  return { ...result, refused, precision: site.precision!, values: Object.fromEntries(result.mean.map((tensor) => [tensor.name, [...float32Values(tensor)]])) };
}

const mean = (rows: number[][]) => rows[0]!.map((_, index) => rows.reduce((sum, row) => sum + row[index]!, 0) / rows.length);
const UPDATES = { alpha: [1, -2, 0.5, 0.25], bravo: [3, 2, -0.5, 7.5], charlie: [-1, 0.125, 1.5, -3], delta: [0.3, 0.7, -7.9, 2] };

function expectMean(values: Record<string, number[]>, rows: number[][], precision: number) {
  const expected = mean(rows);
  [...values.b!, ...values.a!].forEach((value, index) => expect(Math.abs(value - expected[index]!)).toBeLessThanOrEqual(precision + 1e-6 * Math.abs(expected[index]!)));
}

describe("secure aggregation protocol", () => {
  it("gives the site the mean of every result, and no masked result holds its client's quantized update", async () => {
    const masked = new Map<string, number[]>();
    const round = await runRound(UPDATES, {
      tamper: (phase, client, data) => {
        if (phase === "masked") masked.set(client, data.tensors.flatMap((tensor) => [...new Int32Array(new Uint8Array(tensor.data).buffer)]));
        return data;
      },
    });
    expect(round.survivors).toEqual(["alpha", "bravo", "charlie", "delta"]);
    expectMean(round.values, Object.values(UPDATES), round.precision);
    const quantization = new Quantization(8, 4);
    for (const [client, update] of Object.entries(UPDATES)) {
      // Masked tensors go in name order: "a" (elements 2..) before "b" (elements 0, 1).
      const ordered = [...update.slice(2), ...update.slice(0, 2)];
      const levels = new Int32Array(ordered.length);
      quantization.quantize(Float32Array.from(ordered), levels);
      masked.get(client)!.forEach((level, index) => expect(level).not.toBe(levels[index]));
    }
  });

  it("recovers the sum of the survivors when a client drops out after sharing its keys", async () => {
    const round = await runRound(UPDATES, { drop: ["charlie"] });
    expect(round.dropped).toEqual(["charlie"]);
    expectMean(round.values, [UPDATES.alpha, UPDATES.bravo, UPDATES.delta], round.precision);
  });

  it("works over a sparse neighbour graph (SecAgg+) with a dropout", async () => {
    const updates = Object.fromEntries(Array.from({ length: 9 }, (_, index) => [`c${index}`, [index, -index, index / 2, 1]]));
    const round = await runRound(updates, { neighbours: 4, drop: ["c3"] });
    expectMean(round.values, Object.entries(updates).filter(([name]) => name !== "c3").map(([, values]) => values), round.precision);
  });

  it("refuses a malformed share and a result of the wrong length, naming them, and the round survives without their senders", async () => {
    const updates = { ...UPDATES, echo: [0, 0, 1, 1], foxtrot: [2, 2, 2, 2], golf: [1, 1, 1, 1] };
    const round = await runRound(updates, {
      tamper: (phase, client, data) => {
        if (phase === "share" && client === "bravo") return { ...data, tensors: data.tensors.map((tensor) => (tensor.name === TENSORS.sealedShares("alpha") ? bytesTensor(tensor.name, tensor.data.subarray(0, 10)) : tensor)) };
        if (phase === "masked" && client === "delta") return { ...data, tensors: data.tensors.map((tensor) => (tensor.name === "a" ? { ...tensor, shape: [3], data: Buffer.concat([tensor.data, Buffer.alloc(4)]) } : tensor)) };
        return data;
      },
    });
    expect(round.refused.bravo).toBe(`tensor secagg/shares/alpha: 10 bytes, sealed shares have 94`);
    expect(round.refused.delta).toBe(`tensor "a" has shape [3], expected [2]`);
    expect(round.dropped).toEqual(["delta"]);
    expectMean(round.values, [updates.alpha, updates.charlie, updates.echo, updates.foxtrot, updates.golf], round.precision);
  });

  it("a seed rebuilt from a wrong share is caught by its commitment, naming its owner", async () => {
    const flip = (data: DataExchange) => ({ ...data, tensors: data.tensors.map((tensor) => (tensor.name === TENSORS.seedShare("bravo") ? bytesTensor(tensor.name, Buffer.from(tensor.data).map((byte, index) => (index === 0 ? byte ^ 1 : byte))) : tensor)) });
    await expect(runRound(UPDATES, { tamper: (phase, client, data) => (phase === "unmask" && client === "alpha" ? flip(data) : data) })).rejects.toThrow(
      "the self-mask seed of bravo rebuilt from its shares does not match its commitment: a share was wrong",
    );
  });

  it("a client refuses to reveal both secrets of one neighbour", async () => {
    const client = new SecureAggregationClient("alpha", silentLogger);
    const names = ["alpha", "bravo", "charlie", "delta"];
    const site = new SecureRound({ jobId: JOB, round: 0, clients: names, clipRange: 1 });
    const peers = new Map(names.map((name) => [name, name === "alpha" ? client : new SecureAggregationClient(name, silentLogger)]));
    for (const name of names) site.acceptKeys(name, await (peers.get(name)!.intercept({ taskId: "k", jobId: JOB }, site.advertiseTask()) as { answer: Promise<DataExchange> }).answer);
    for (const name of site.beginSharing()) site.acceptShares(name, await (peers.get(name)!.intercept({ taskId: "s", jobId: JOB }, site.shareKeysTask(name)) as { answer: Promise<DataExchange> }).answer);
    site.beginMasking();
    client.intercept({ taskId: "t", jobId: JOB }, site.maskedInputTask(weights([0, 0, 0])));
    await client.seal("t", weights([1, 1, 1]), ReturnCode.RETURN_CODE_OK);
    const greedy = { kind: DataKind.DATA_KIND_UNSPECIFIED, tensors: [], values: undefined, meta: { secagg: { phase: "unmask", round: 0, survivors: ["alpha", "bravo", "charlie"], dropped: ["bravo"] } } };
    await expect((client.intercept({ taskId: "u", jobId: JOB }, greedy) as { answer: Promise<DataExchange> }).answer).rejects.toThrow("bravo is named both a survivor and dropped");
  });

  it("a failed training task sends no data, and quantization keeps n clients' sum inside int32", async () => {
    const client = new SecureAggregationClient("alpha", silentLogger);
    expect(client.masks("none")).toBe(false);
    const quantization = new Quantization(8, 8);
    const levels = new Int32Array(3);
    expect(quantization.quantize(Float32Array.from([100, -100, Number.NaN]), levels)).toBe(3);
    expect(8 * Math.abs(levels[0]!)).toBeLessThanOrEqual(2 ** 31 - 1);
    expect(quantization.step).toBeLessThan(3e-8 * 1.01);
    expect(() => new SecureRound({ jobId: JOB, round: 0, clients: ["a", "b"], clipRange: 1 })).toThrow(RoundUnrecoverable);
  });
});
