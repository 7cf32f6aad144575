import { randomBytes } from "node:crypto";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { readSafetensorsFile } from "../../shared/safetensors.js";
import { float32Tensor, float32Values } from "../../shared/tensor.js";
import { CHECKPOINT_DIR } from "../workflows/checkpoint.js";
import { saveModel } from "../workflows/model-files.js";

const rate = z.number().gt(0, "must be more than 0");
const decay = z.number().min(0, "must be 0 or more").lt(1, "must be less than 1");
/** Reddi et al.'s adaptive optimizers share their arguments; the defaults are theirs. */
const adaptive = {
  /** Server learning rate (eta). */
  lr: rate.default(0.01),
  /** First-moment decay. */
  beta1: decay.default(0.9),
  /** Second-moment decay. */
  beta2: decay.default(0.99),
  /** Adaptivity: keeps the step finite where the second moment is ~0. */
  tau: rate.default(1e-3),
};

/** FedAvg's `server_optimizer` argument: how the round's aggregate moves the global model. */
export const ServerOptimizerArgs = z.discriminatedUnion("name", [
  /** The aggregate becomes the global model (FedAvg). */
  z.object({ name: z.literal("none") }).strict(),
  /** Server momentum (Hsu et al., 2019): m = momentum x m + delta; global += lr x m. */
  z.object({ name: z.literal("fedavgm"), lr: rate.default(1), momentum: decay.default(0.9) }).strict(),
  /** Adam on the server (Reddi et al., 2021). */
  z.object({ name: z.literal("fedadam"), ...adaptive }).strict(),
  /** Yogi on the server (Reddi et al., 2021): its second moment grows more slowly when updates shrink. */
  z.object({ name: z.literal("fedyogi"), ...adaptive }).strict(),
]);

export type ServerOptimizerArgs = z.infer<typeof ServerOptimizerArgs>;

const STATE_FILE = /^optimizer-\d+(-[0-9a-f]+)?\.safetensors$/;

/** The optimizer's moments, by model tensor name: m (first) for all, v (second) for the adaptive ones. */
interface Moments {
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array> | undefined;
}

/**
 * Applies the round's aggregate to the global model as an optimizer step,
 * with delta = aggregate - global (the negated pseudo-gradient):
 *   fedavgm: m = momentum m + delta;                                global += lr m
 *   fedadam: m = beta1 m + (1 - beta1) delta; v = beta2 v + (1 - beta2) delta^2
 *   fedyogi: m as fedadam;                    v = v - (1 - beta2) delta^2 sign(v - delta^2)
 *            then for both:                                         global += lr m / (sqrt(v) + tau)
 * m starts at 0 and v at tau^2, without bias correction, as in Reddi et al.'s
 * algorithm. The moments are model-sized and go into the workflow's
 * checkpoint (checkpoint()), so a restarted site goes on with them.
 */
export class ServerOptimizer {
  private moments: Moments | undefined;

  private constructor(readonly args: ServerOptimizerArgs) {}

  /** The optimizer `args` names, with the moments saved in the checkpoint file `stateFile` (checkpoint()'s answer) when resuming. */
  static async restore(args: ServerOptimizerArgs, workspace: string, stateFile: string | undefined): Promise<ServerOptimizer> {
    const optimizer = new ServerOptimizer(args);
    if (stateFile === undefined || args.name === "none") return optimizer;
    const { tensors } = await readSafetensorsFile(join(workspace, CHECKPOINT_DIR, stateFile));
    const moment = (prefix: string) => new Map(tensors.filter((tensor) => tensor.name.startsWith(prefix)).map((tensor) => [tensor.name.slice(prefix.length), Float32Array.from(float32Values(tensor))]));
    optimizer.moments = { m: moment("m:"), v: args.name === "fedavgm" ? undefined : moment("v:") };
    return optimizer;
  }

  /**
   * The next global model: the aggregate itself for "none" or when there is no
   * global model yet (a first round without an initial one), else one
   * optimizer step. Computed in place, in the aggregate's buffers.
   */
  step(global: readonly Tensor[] | undefined, aggregate: Tensor[]): Tensor[] {
    const { args } = this;
    if (args.name === "none" || !global) return aggregate;
    const moments = (this.moments ??= this.initialMoments(aggregate));
    const before = new Map(global.map((tensor) => [tensor.name, float32Values(tensor)]));
    for (const tensor of aggregate) {
      const x = before.get(tensor.name);
      const m = moments.m.get(tensor.name);
      const v = moments.v?.get(tensor.name);
      const next = float32Values(tensor);
      if (!x || !m || (moments.v && !v) || x.length !== next.length || m.length !== next.length) {
        throw new Error(`server_optimizer ${args.name}: its state does not fit tensor ${JSON.stringify(tensor.name)} of the model`);
      }
      if (args.name === "fedavgm") {
        for (let i = 0; i < next.length; i++) {
          m[i] = args.momentum * m[i]! + (next[i]! - x[i]!);
          next[i] = x[i]! + args.lr * m[i]!;
        }
        continue;
      }
      const { lr, beta1, beta2, tau } = args;
      const yogi = args.name === "fedyogi";
      for (let i = 0; i < next.length; i++) {
        const delta = next[i]! - x[i]!;
        const squared = delta * delta;
        m[i] = beta1 * m[i]! + (1 - beta1) * delta;
        v![i] = yogi ? v![i]! - (1 - beta2) * squared * Math.sign(v![i]! - squared) : beta2 * v![i]! + (1 - beta2) * squared;
        next[i] = x[i]! + (lr * m[i]!) / (Math.sqrt(v![i]!) + tau);
      }
    }
    return aggregate;
  }

  /**
   * Saves the moments as checkpoint/optimizer-<position>-<random>.safetensors
   * and returns that name, for the workflow's checkpoint state to name; call
   * it before writing that state, and prune() after. Undefined: nothing to
   * save. The random part: with site replicas, a paused old leader may still
   * write its file for the same position after a new leader wrote its own;
   * under another name it cannot replace the file the fenced state names.
   */
  async checkpoint(workspace: string, position: number): Promise<string | undefined> {
    const { moments } = this;
    if (!moments) return undefined;
    const file = `optimizer-${position}-${randomBytes(6).toString("hex")}.safetensors`;
    const tensors = (prefix: string, values: Map<string, Float32Array>) => [...values].map(([name, array]) => float32Tensor(`${prefix}${name}`, [array.length], array));
    await saveModel(workspace, join(CHECKPOINT_DIR, file), [...tensors("m:", moments.m), ...tensors("v:", moments.v ?? new Map())], { optimizer: this.args.name, position: String(position) });
    return file;
  }

  /** Removes the moments' files other than `keep` (the one the checkpoint state now names). */
  static async prune(workspace: string, keep: string | undefined): Promise<void> {
    for (const name of await readdir(join(workspace, CHECKPOINT_DIR))) {
      if (name !== keep && STATE_FILE.test(name)) await rm(join(workspace, CHECKPOINT_DIR, name), { force: true });
    }
  }

  private initialMoments(model: readonly Tensor[]): Moments {
    const { args } = this;
    const filled = (value: number) => new Map(model.map((tensor) => [tensor.name, new Float32Array(float32Values(tensor).length).fill(value)]));
    return { m: filled(0), v: args.name === "fedadam" || args.name === "fedyogi" ? filled(args.tau * args.tau) : undefined };
  }
}
