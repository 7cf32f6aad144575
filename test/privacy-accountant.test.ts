import { describe, expect, it } from "vitest";
import { epsilonOf, logErfc, RdpAccountant, sampledGaussianRdp } from "../services/privacy/rdp.js";

/** A_α by numerical integration of E[((1-q) + q e^((2z-1)/(2σ²)))^α], z ~ N(0, σ²): the definition, independent of the series. */
function rdpByIntegration(q: number, sigma: number, order: number): number {
  let sum = 0;
  const step = 0.001;
  for (let z = -20 * sigma; z <= 20 * sigma; z += step) {
    const density = Math.exp((-z * z) / (2 * sigma * sigma)) / (sigma * Math.sqrt(2 * Math.PI));
    sum += density * (1 - q + q * Math.exp((2 * z - 1) / (2 * sigma * sigma))) ** order * step;
  }
  return Math.log(sum) / (order - 1);
}

describe("the RDP accountant of the sampled Gaussian mechanism", () => {
  it("gives Opacus's epsilon for its reference case (sigma 1.5, q 0.04, 2250 steps, delta 1e-5)", () => {
    const accountant = new RdpAccountant();
    accountant.compose(0.04, 1.5, Math.floor(90 / 0.04));
    // opacus/tests/accountants_test.py: test_rdp_accountant asserts 7.32911117143.
    expect(accountant.epsilon(1e-5)).toBeCloseTo(7.32911117143, 8);
  });

  it("matches Google dp_accounting's RDP at integer orders (q 0.01, sigma 2.5, 50 steps), and the definition at fractional ones", () => {
    const rdp = sampledGaussianRdp(0.01, 2.5, [5, 50, 100]).map((value) => value * 50);
    // dp_accounting rdp_privacy_accountant_test.py: test_compute_rdp_poisson_sampled_gaussian.
    [2.18075656e-3, 2.38460375e-2, 1.67416308e2].forEach((expected, index) => expect(Math.abs(rdp[index]! / expected - 1)).toBeLessThan(1e-6));
    for (const order of [1.5, 2.5, 7.3]) expect(Math.abs(sampledGaussianRdp(0.01, 2.5, [order])[0]! / rdpByIntegration(0.01, 2.5, order) - 1)).toBeLessThan(1e-5);
  });

  it("converts RDP to (epsilon, delta) as the reference does, and has the Gaussian mechanism's closed form without sampling", () => {
    const orders = Array.from({ length: 31 }, (_, index) => index + 2);
    // Constant RDP is pure DP; dp_accounting's test_compute_epsilon_delta_pure_dp: 1.32783806176 at order 32.
    expect(epsilonOf(orders, orders.map(() => 1.1), 1e-5)).toEqual({ epsilon: expect.closeTo(1.32783806176, 10), order: 32 });
    // dp_accounting's test_compute_epsilon_delta_gaussian: sigma 4.530877117 gives exactly (1, 1e-6)-DP.
    const fine = Array.from({ length: 99_000 }, (_, index) => 1 + index / 1000);
    expect(epsilonOf(fine, sampledGaussianRdp(1, 4.530877117, fine), 1e-6).epsilon).toBeCloseTo(1, 6);
    expect(sampledGaussianRdp(1, 2, [3])[0]).toBe(3 / 8);
  });

  it("composes rounds, predicts the next one, saves its state, and handles the edge cases", () => {
    const accountant = new RdpAccountant();
    const predicted = accountant.epsilonAfter(0.5, 1, 1e-5);
    accountant.compose(0.5, 1);
    expect(accountant.epsilon(1e-5)).toBe(predicted);
    const resumed = new RdpAccountant(accountant.state);
    resumed.compose(0.5, 1);
    accountant.compose(0.5, 1, 1);
    expect(resumed.epsilon(1e-5)).toBe(accountant.epsilon(1e-5));
    expect(accountant.epsilon(1e-5)).toBeGreaterThan(predicted);
    expect(sampledGaussianRdp(0, 1, [2])[0]).toBe(0);
    expect(sampledGaussianRdp(0.1, 0, [2])[0]).toBe(Infinity);
    expect(() => epsilonOf([2], [1], 0)).toThrow(/delta 0 is not in \(0, 1\)/);
    // erfc(1) = 0.157299207050285..., erfc(-1) = 2 - erfc(1), erfc(10) = 2.0884875837625e-45 (no underflow in log form).
    expect(Math.exp(logErfc(1))).toBeCloseTo(0.15729920705028513, 14);
    expect(Math.exp(logErfc(-1))).toBeCloseTo(1.8427007929497148, 14);
    expect(logErfc(10) / Math.log(2.088487583762545e-45)).toBeCloseTo(1, 12);
    expect(logErfc(40)).toBeLessThan(-1600);
  });
});
