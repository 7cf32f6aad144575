import { z } from "zod";
import type { Logger } from "../shared/logger.js";
import { GaussianSource } from "./random.js";
import { type AccountantState, RdpAccountant } from "./rdp.js";

const positive = z.number().gt(0, "must be greater than 0").finite();

/**
 * A round-based workflow's differential privacy (FedAvg's `dp` argument;
 * docs/privacy.md). "central": the site clips each client's update and noises
 * the sum (DP-FedAvg, McMahan et al. 2018), with a fixed clip norm or one that
 * follows a quantile of the updates' norms (Andrew et al. 2021). "local": the
 * clients clip and noise (their clip_l2 and gaussian_noise filters) and report
 * what they applied; the site only accounts.
 */
export const DpArgs = z
  .object({
    mode: z.enum(["central", "local"]).default("central"),
    /** Central: the noise's stddev over the clip norm. Local: the least each client must report (and what the stop before a round predicts with). */
    noise_multiplier: positive.optional(),
    clipping: z
      .object({
        fixed: z.object({ max_norm: positive }).strict().optional(),
        adaptive: z
          .object({
            initial_norm: positive,
            target_quantile: z.number().min(0, "must be in [0, 1]").max(1, "must be in [0, 1]").default(0.5),
            learning_rate: positive.default(0.2),
            /** The stddev of the noise on the count of clients under the clip; default clients per round / 20. */
            count_noise_multiplier: positive.optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .refine((clipping) => (clipping.fixed === undefined) !== (clipping.adaptive === undefined), { message: "give exactly one of fixed and adaptive" })
      .optional(),
    delta: z.number().gt(0, "must be in (0, 1)").lt(1, "must be in (0, 1)").default(1e-5),
    /** Stop (COMPLETED) before a round that would take epsilon past this. */
    target_epsilon: positive.optional(),
    /** The clients each round samples from; default the job's clients (a sampling rate of 1). */
    population: z.number().int().min(1, "must be at least 1").optional(),
  })
  .strict()
  .superRefine((args, context) => {
    if (args.mode === "central") {
      if (args.noise_multiplier === undefined) context.addIssue({ code: "custom", path: ["noise_multiplier"], message: "is required for central DP" });
      if (args.clipping === undefined) context.addIssue({ code: "custom", path: ["clipping"], message: 'is required for central DP: {"fixed": {"max_norm": ...}} or {"adaptive": {...}}' });
    } else if (args.clipping !== undefined) {
      context.addIssue({ code: "custom", path: ["clipping"], message: "is for central DP only: under local DP each client clips with its own clip_l2 filter" });
    }
    const countStddev = args.clipping?.adaptive?.count_noise_multiplier;
    if (countStddev !== undefined && args.noise_multiplier !== undefined && 2 * countStddev <= args.noise_multiplier) {
      context.addIssue({ code: "custom", path: ["clipping", "adaptive", "count_noise_multiplier"], message: `must be more than half of noise_multiplier (${args.noise_multiplier / 2}): the count's noise alone would spend the round's budget` });
    }
  });

export type DpArgs = z.output<typeof DpArgs>;

/** What a checkpoint keeps of a job's DP, so that a resumed job goes on spending from where it was. */
export interface DpState {
  accountant: AccountantState;
  clipNorm: number | undefined;
  lastNoiseMultiplier: number | undefined;
}

/** A result the DP of the round cannot take (local DP without what the client applied). */
export class DpResultRefused extends Error {}

/** What accumulates a round's clipped updates: FedAvg's WeightedAverage. */
export interface NoisySum {
  addNoise(stddev: number, normal: { sample(): number }): void;
}

/** One job's DP across rounds: the clip norm, the noise, the accountant and the stop at target_epsilon. */
export class RoundDp {
  private readonly accountant: RdpAccountant;
  private clipNorm: number | undefined;
  private lastNoiseMultiplier: number | undefined;
  private readonly normal = GaussianSource.create();
  /** This round: clients whose update was within the clip (adaptive), the smallest noise multiplier reported (local), how many results. */
  private unclipped = 0;
  private reported: { noiseMultiplier: number; clipNorm: number } | undefined;
  private results = 0;

  constructor(
    readonly args: DpArgs,
    /** The clients each round asks. */
    private readonly clientsPerRound: number,
    saved: DpState | undefined,
    private readonly logger: Logger,
  ) {
    this.accountant = new RdpAccountant(saved?.accountant);
    const clipping = args.clipping;
    this.clipNorm = saved?.clipNorm ?? clipping?.fixed?.max_norm ?? clipping?.adaptive?.initial_norm;
    this.lastNoiseMultiplier = saved?.lastNoiseMultiplier;
    this.updateNoiseMultiplier(); // a bad count_noise_multiplier fails the job at its start
  }

  /** The rate at which a round samples a member of the population. */
  get samplingRate(): number {
    return Math.min(1, this.clientsPerRound / (this.args.population ?? this.clientsPerRound));
  }

  /** Central DP: each result's update is clipped to this norm as it is folded, at weight 1. */
  get clip(): number | undefined {
    return this.args.mode === "central" ? this.clipNorm : undefined;
  }

  /**
   * Why the job stops before its next round (the round would take epsilon past
   * target_epsilon), or undefined. Under local DP without a job
   * noise_multiplier, the prediction uses the last round's reported one (none
   * before the first round: it runs).
   */
  stopBeforeRound(): string | undefined {
    const target = this.args.target_epsilon;
    const sigma = this.args.noise_multiplier ?? this.lastNoiseMultiplier;
    if (target === undefined || sigma === undefined) return undefined;
    const next = this.accountant.epsilonAfter(this.samplingRate, sigma, this.args.delta);
    if (next <= target) return undefined;
    return `stopped before the next round: it would take epsilon from ${this.epsilon.toFixed(3)} to ${next.toFixed(3)}, past dp.target_epsilon ${target} (delta ${this.args.delta})`;
  }

  get epsilon(): number {
    return this.accountant.epsilon(this.args.delta);
  }

  /** The rounds accounted so far (over the job's runs). */
  get roundsAccounted(): number {
    return this.accountant.state.steps;
  }

  /**
   * A result was folded: `norm` is its update's norm before the clip (central);
   * `meta` its meta, where a local-DP client reports dp_noise_multiplier and
   * dp_clip_norm. Throws DpResultRefused (before the fold: call it first under
   * local DP) when a local-DP result does not say it was noised enough.
   */
  check(meta: Record<string, unknown> | undefined): void {
    if (this.args.mode !== "local") return;
    const noiseMultiplier = meta?.dp_noise_multiplier;
    const clipNorm = meta?.dp_clip_norm;
    if (typeof noiseMultiplier !== "number" || !(noiseMultiplier > 0) || typeof clipNorm !== "number") {
      throw new DpResultRefused("sent no dp_noise_multiplier and dp_clip_norm in its meta: under local DP every client clips and noises its update (clip_l2, then gaussian_noise with noise_multiplier)");
    }
    if (this.args.noise_multiplier !== undefined && noiseMultiplier < this.args.noise_multiplier) {
      throw new DpResultRefused(`noised with dp_noise_multiplier ${noiseMultiplier}, less than the job's dp.noise_multiplier ${this.args.noise_multiplier}`);
    }
  }

  /** A result was folded (after check()); `norm`: its update's norm before the central clip. */
  folded(meta: Record<string, unknown> | undefined, norm: number | undefined): void {
    this.results++;
    if (this.args.mode === "local") {
      const noiseMultiplier = meta!.dp_noise_multiplier as number;
      if (!this.reported || noiseMultiplier < this.reported.noiseMultiplier) this.reported = { noiseMultiplier, clipNorm: meta!.dp_clip_norm as number };
    } else if (norm !== undefined && norm <= this.clipNorm!) this.unclipped++;
  }

  /**
   * Ends the round: central DP noises the sum (before its mean is taken) and
   * adapts the clip norm; both account the round. Returns the round's DP
   * figures for the job's metrics.
   */
  endRound(sum: NoisySum): Record<string, number> {
    const usedClip = this.clipNorm;
    let noiseMultiplier: number;
    if (this.args.mode === "central") {
      noiseMultiplier = this.args.noise_multiplier!;
      sum.addNoise(this.updateNoiseMultiplier() * usedClip!, this.normal);
      this.adaptClip();
    } else {
      noiseMultiplier = this.reported!.noiseMultiplier;
    }
    this.accountant.compose(this.samplingRate, noiseMultiplier);
    this.lastNoiseMultiplier = noiseMultiplier;
    const figures = { dp_epsilon: this.epsilon, dp_delta: this.args.delta, dp_noise_multiplier: noiseMultiplier, dp_clip_norm: usedClip ?? this.reported!.clipNorm };
    this.logger.info({ ...figures, results: this.results, samplingRate: this.samplingRate, nextClipNorm: this.clipNorm }, "round accounted");
    this.unclipped = 0;
    this.reported = undefined;
    this.results = 0;
    return figures;
  }

  get state(): DpState {
    return { accountant: this.accountant.state, clipNorm: this.clipNorm, lastNoiseMultiplier: this.lastNoiseMultiplier };
  }

  /**
   * The multiplier of the update's noise. With adaptive clipping the count of
   * unclipped clients is released too, so the update's noise is lowered to
   * keep the round's total at noise_multiplier: z_update^-2 = z^-2 - (2 sigma_count)^-2
   * (Andrew et al. 2021, Section 3).
   */
  private updateNoiseMultiplier(): number {
    const z = this.args.noise_multiplier ?? 0;
    const adaptive = this.args.clipping?.adaptive;
    if (!adaptive || this.args.mode !== "central") return z;
    const countStddev = this.countStddev;
    if (2 * countStddev <= z) {
      throw new Error(
        `dp.clipping.adaptive.count_noise_multiplier: ${countStddev} is too small for dp.noise_multiplier ${z}: the count's noise alone would spend the round's budget; give more than ${z / 2}`,
      );
    }
    return (z ** -2 - (2 * countStddev) ** -2) ** -0.5;
  }

  private get countStddev(): number {
    return this.args.clipping?.adaptive?.count_noise_multiplier ?? this.clientsPerRound / 20;
  }

  /** Adaptive clipping: C <- C exp(-eta (noised fraction under the clip - target quantile)). */
  private adaptClip(): void {
    const adaptive = this.args.clipping?.adaptive;
    if (!adaptive || this.results === 0) return;
    const fraction = (this.unclipped + this.countStddev * this.normal.sample()) / this.results;
    this.clipNorm! *= Math.exp(-adaptive.learning_rate * (fraction - adaptive.target_quantile));
  }
}
