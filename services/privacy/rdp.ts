/**
 * Rényi differential privacy accounting for the sampled Gaussian mechanism
 * (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled
 * Gaussian Mechanism"): each round releases a sum of clipped updates of the
 * clients sampled with probability q, plus Gaussian noise of `sigma` x the
 * clip norm. Its RDP at order α is log(A_α) / (α - 1); rounds compose by adding
 * RDP per order; (ε, δ) follows from the best order.
 */

/** The orders RDP is tracked at (those Opacus uses by default): fine steps near 1, integers up to 63. */
export const DEFAULT_ORDERS: readonly number[] = [...Array.from({ length: 99 }, (_, x) => 1 + (x + 1) / 10), ...Array.from({ length: 52 }, (_, x) => 12 + x)];

/** RDP of one step of the sampled Gaussian mechanism at each order. */
export function sampledGaussianRdp(q: number, sigma: number, orders: readonly number[]): number[] {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`sampling rate ${q} is not in [0, 1]`);
  if (!(sigma >= 0)) throw new RangeError(`noise multiplier ${sigma} is negative`);
  return orders.map((order) => {
    if (q === 0) return 0;
    if (sigma === 0) return Infinity;
    if (q === 1) return order / (2 * sigma * sigma);
    if (order === Infinity) return Infinity;
    return logA(q, sigma, order) / (order - 1);
  });
}

/** log A_α (the paper's Section 3.3): exact binomial expansion for an integer order, two convergent series otherwise. */
function logA(q: number, sigma: number, order: number): number {
  return Number.isInteger(order) ? logAInteger(q, sigma, order) : logAFractional(q, sigma, order);
}

function logAInteger(q: number, sigma: number, order: number): number {
  const terms: number[] = [];
  let logBinomial = 0;
  for (let k = 0; k <= order; k++) {
    if (k > 0) logBinomial += Math.log(order - k + 1) - Math.log(k);
    terms.push(logBinomial + k * Math.log(q) + (order - k) * Math.log1p(-q) + (k * k - k) / (2 * sigma * sigma));
  }
  return logSumExp(terms);
}

/** Terms smaller than e^-30 end the series (they shrink faster than geometrically past the order). */
const SERIES_CUTOFF = -30;

function logAFractional(q: number, sigma: number, order: number): number {
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  const positive: number[] = [];
  const negative: number[] = [];
  let logBinomial = 0; // log |C(order, k)|
  let sign = 1;
  for (let k = 0; ; k++) {
    if (k > 0) {
      const factor = (order - k + 1) / k;
      logBinomial += Math.log(Math.abs(factor));
      if (factor < 0) sign = -sign;
    }
    const j = order - k;
    const s0 = logBinomial + k * Math.log(q) + j * Math.log1p(-q) + (k * k - k) / (2 * sigma * sigma) + Math.log(0.5) + logErfc((k - z0) / (Math.SQRT2 * sigma));
    const s1 = logBinomial + j * Math.log(q) + k * Math.log1p(-q) + (j * j - j) / (2 * sigma * sigma) + Math.log(0.5) + logErfc((z0 - j) / (Math.SQRT2 * sigma));
    (sign > 0 ? positive : negative).push(s0, s1);
    if (k > order && Math.max(s0, s1) < SERIES_CUTOFF) break;
  }
  const pos = logSumExp(positive);
  const neg = logSumExp(negative);
  if (neg === -Infinity) return pos;
  if (!(pos > neg)) throw new RangeError(`the RDP series did not converge for q=${q}, sigma=${sigma}, order=${order}`);
  return pos + Math.log1p(-Math.exp(neg - pos));
}

function logSumExp(values: readonly number[]): number {
  const max = Math.max(...values);
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (const value of values) sum += Math.exp(value - max);
  return max + Math.log(sum);
}

/** Below this, erfc comes from erf's series; from here on, from its continued fraction. */
const ERFC_SPLIT = 3;
/** Terms of erfc's continued fraction: enough for double precision from ERFC_SPLIT on. */
const FRACTION_TERMS = 120;

/**
 * log(erfc(x)) to near double precision, finite for every x (the series for
 * fractional orders subtract terms near 1, so a single-precision erfc is not
 * enough). Small x: erf(x) = 2/√π e^(-x²) Σ 2^n x^(2n+1) / (2n+1)!!, whose
 * terms are all positive; large x: erfc's continued fraction in log form
 * (it would underflow otherwise); negative x: erfc(x) = 2 - erfc(-x).
 */
export function logErfc(x: number): number {
  if (x < 0) return Math.log(2 - Math.exp(logErfc(-x)));
  if (x < ERFC_SPLIT) {
    let term = x;
    let sum = x;
    for (let n = 1; term > sum * 1e-17; n++) {
      term *= (2 * x * x) / (2 * n + 1);
      sum += term;
    }
    return Math.log1p(-(2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum);
  }
  let fraction = x;
  for (let n = FRACTION_TERMS; n >= 1; n--) fraction = x + n / 2 / fraction;
  return -x * x - 0.5 * Math.log(Math.PI) - Math.log(fraction);
}

/**
 * The smallest ε over the orders for which accumulated RDP gives (ε, δ)-DP,
 * with the conversion of Balle et al. 2020 ("Hypothesis testing
 * interpretations and Rényi differential privacy", Proposition 12):
 * ε = rdp + log((α-1)/α) - (log δ + log α) / (α - 1).
 */
export function epsilonOf(orders: readonly number[], rdp: readonly number[], delta: number): { epsilon: number; order: number } {
  if (!(delta > 0 && delta < 1)) throw new RangeError(`delta ${delta} is not in (0, 1)`);
  let best = { epsilon: Infinity, order: NaN };
  for (const [index, order] of orders.entries()) {
    const r = rdp[index]!;
    let epsilon: number;
    if (delta * delta + Math.expm1(-r) > 0) epsilon = 0; // so little divergence that δ alone covers it
    else if (order > 1.01) epsilon = r + Math.log1p(-1 / order) - Math.log(delta * order) / (order - 1);
    else epsilon = Infinity; // the bound is unstable as the order nears 1
    if (epsilon < best.epsilon) best = { epsilon, order };
  }
  return { epsilon: Math.max(0, best.epsilon), order: best.order };
}

/** What an accountant has spent so far, as a checkpoint keeps it. */
export interface AccountantState {
  rdp: number[];
  steps: number;
}

/** Accumulates the RDP of rounds of the sampled Gaussian mechanism and reports ε for a δ. */
export class RdpAccountant {
  private readonly rdp: number[];
  private steps: number;

  constructor(
    state?: AccountantState,
    readonly orders: readonly number[] = DEFAULT_ORDERS,
  ) {
    this.rdp = state ? [...state.rdp] : orders.map(() => 0);
    this.steps = state?.steps ?? 0;
    if (this.rdp.length !== orders.length) throw new RangeError(`the saved accountant has ${this.rdp.length} orders, expected ${orders.length}`);
  }

  /** Adds `steps` rounds with sampling rate `q` and noise multiplier `sigma`. */
  compose(q: number, sigma: number, steps = 1): void {
    sampledGaussianRdp(q, sigma, this.orders).forEach((value, index) => (this.rdp[index]! += value * steps));
    this.steps += steps;
  }

  /** ε after the rounds composed so far, for `delta`. */
  epsilon(delta: number): number {
    return epsilonOf(this.orders, this.rdp, delta).epsilon;
  }

  /** ε as it would be after one more round of (q, sigma): to stop before a round that would exceed a budget. */
  epsilonAfter(q: number, sigma: number, delta: number): number {
    const next = sampledGaussianRdp(q, sigma, this.orders).map((value, index) => this.rdp[index]! + value);
    return epsilonOf(this.orders, next, delta).epsilon;
  }

  get state(): AccountantState {
    return { rdp: [...this.rdp], steps: this.steps };
  }
}
