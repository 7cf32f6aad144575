import { linkSync } from "node:fs";
import { readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { writeFileAtomic } from "../services/shared/durable-file.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import { CHECKPOINT_DIR, fileCheckpoints, spareModelName } from "../services/site/workflows/checkpoint.js";
import { PayloadStore } from "../services/site/payload-store.js";
import { SpareFiles } from "../services/site/uploads/spare-files.js";
import { UploadSpool } from "../services/site/uploads/upload-spool.js";
import { tempDir } from "./helpers/job-site.js";
import { eventually } from "./helpers/site.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
async function folder(): Promise<string> {
  const dir = await tempDir("campfire-spares-");
  dirs.push(dir);
  return dir;
}

/** Stages `bytes` (not a DataExchange: the scan's verdict does not matter here) and returns the staged result. */
async function stage(dir: string, bytes: Uint8Array, spares: SpareFiles) {
  const spool = new UploadSpool(dir, bytes.length, spares);
  await spool.write(bytes);
  const finished = await spool.finish();
  if ("problem" in finished) throw new Error(finished.problem);
  return finished.staged;
}

describe("spare staging files (uploads are written over the files of earlier ones)", () => {
  it("a released upload's file is the next upload's, written over and cut to the new length", async () => {
    const dir = await folder();
    const spares = new SpareFiles(dir, () => 1 << 20);
    const first = await stage(dir, Buffer.alloc(5000, 1), spares);
    const inode = (await stat(first.path)).ino;
    first.release();
    expect(spares.bytes).toBe(5000);
    const second = await stage(dir, Buffer.alloc(3000, 2), spares);
    expect((await stat(second.path)).ino).toBe(inode);
    expect(second.path).not.toBe(first.path);
    // The old tail is gone: the file holds exactly the new upload.
    expect(await readFile(second.path)).toEqual(Buffer.alloc(3000, 2));
    expect(spares.bytes).toBe(0);
    second.release();
    expect(await readdir(dir)).toHaveLength(1);
    spares.close();
    expect(await readdir(dir)).toEqual([]);
  });

  it("a file linked elsewhere (a result a robust aggregator keeps) is removed, never written over", async () => {
    const dir = await folder();
    const spares = new SpareFiles(dir, () => 1 << 20);
    const staged = await stage(dir, Buffer.alloc(4000, 7), spares);
    linkSync(staged.path, `${staged.path}.kept`);
    staged.release();
    expect(spares.bytes).toBe(0);
    const next = await stage(dir, Buffer.alloc(4000, 9), spares);
    next.release();
    expect(await readFile(`${staged.path}.kept`)).toEqual(Buffer.alloc(4000, 7));
  });

  it("keeps spares within the room the upload budget leaves, and drops the ones left unused", async () => {
    const dir = await folder();
    let room = 6000;
    const spares = new SpareFiles(dir, () => room, 100);
    const a = await stage(dir, Buffer.alloc(4000), spares);
    const b = await stage(dir, Buffer.alloc(4000), spares);
    a.release();
    b.release();
    // Both do not fit 6000 bytes: the older spare went.
    expect(spares.bytes).toBe(4000);
    room = 1000;
    const c = await stage(dir, Buffer.alloc(2000), spares);
    c.release();
    expect(spares.bytes).toBe(0);
    room = 1 << 20;
    const d = await stage(dir, Buffer.alloc(2000), spares);
    d.release();
    expect(spares.bytes).toBe(2000);
    await eventually("the unused spare to be removed", () => spares.bytes === 0, 5_000);
    expect(await readdir(dir)).toEqual([]);
  });

  it("the payload store drops spares as uploads are admitted: spares and uploads together stay within the upload budget", async () => {
    const dir = await folder();
    const store = new PayloadStore(10_000, join(dir, "uploads"));
    await store.reserveUpload(6000, new AbortController().signal);
    const spool = store.spool(6000);
    await spool.write(Buffer.alloc(6000));
    const finished = await spool.finish();
    if ("problem" in finished) throw new Error(finished.problem);
    store.discard(store.putUpload("agent", finished.staged), "agent");
    expect(await readdir(join(dir, "uploads"))).toEqual([expect.stringMatching(/^spare-/)]);
    await store.reserveUpload(6000, new AbortController().signal);
    expect(await readdir(join(dir, "uploads"))).toEqual([]);
    store.close();
  });

  it("an abandoned upload's file becomes a spare too", async () => {
    const dir = await folder();
    const spares = new SpareFiles(dir, () => 1 << 20);
    const spool = new UploadSpool(dir, 10_000, spares);
    await spool.write(Buffer.alloc(4000));
    spool.abandon();
    await eventually("the cut upload's file to be kept as a spare", async () => (await readdir(dir)).every((name) => name.startsWith("spare-")), 5_000);
    expect(await readdir(dir)).toHaveLength(1);
    spares.close();
  });
});

describe("writeFileAtomic with a file to reuse", () => {
  it("writes over the spare file (same inode), cut to the new content, and replaces the target atomically", async () => {
    const dir = await folder();
    const spare = join(dir, "spare");
    await writeFile(spare, Buffer.alloc(10_000, 3));
    const inode = (await stat(spare)).ino;
    await writeFile(join(dir, "model"), "old");
    await writeFileAtomic(join(dir, "model"), [Buffer.from("new "), Buffer.from("model")], { reuse: spare });
    expect(await readFile(join(dir, "model"), "utf8")).toBe("new model");
    expect((await stat(join(dir, "model"))).ino).toBe(inode);
    expect((await readdir(dir)).sort()).toEqual(["model"]);
    // A missing spare: a new file, as without one.
    await writeFileAtomic(join(dir, "model"), "again", { reuse: spare });
    expect(await readFile(join(dir, "model"), "utf8")).toBe("again");
  });
});

describe("checkpoint models (the retired one is the next one's file)", () => {
  it("writes each checkpoint's model over the model two checkpoints back, and drops the spare when the job's run ends", async () => {
    const workspace = await folder();
    const checkpoints = fileCheckpoints(workspace);
    const model = (value: number) => [float32Tensor("w", [1000], new Float32Array(1000).fill(value))];
    await checkpoints.write(1, { nextRound: 1 }, model(1));
    const first = (await stat(join(workspace, CHECKPOINT_DIR, "global-1.safetensors"))).ino;
    await checkpoints.write(2, { nextRound: 2 }, model(2));
    expect((await readdir(join(workspace, CHECKPOINT_DIR))).sort()).toEqual(["global-2.safetensors", spareModelName(), "state.json"]);
    await checkpoints.write(3, { nextRound: 3 }, model(3));
    expect((await stat(join(workspace, CHECKPOINT_DIR, "global-3.safetensors"))).ino).toBe(first);
    const read = await checkpoints.read<{ nextRound: number }>();
    expect(read!.state).toEqual({ nextRound: 3 });
    expect([...float32Values(read!.model![0]!)].every((value) => value === 3)).toBe(true);
    await checkpoints.release();
    expect((await readdir(join(workspace, CHECKPOINT_DIR))).sort()).toEqual(["global-3.safetensors", "state.json"]);
    // A workflow still writing after its run ended (an abort's grace ran out) leaves no spare behind.
    await checkpoints.write(4, { nextRound: 4 }, model(4));
    expect((await readdir(join(workspace, CHECKPOINT_DIR))).sort()).toEqual(["global-4.safetensors", "state.json"]);
  });
});
