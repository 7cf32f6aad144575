import { InvalidArgumentError } from "commander";

/** A commander argument parser for integers of at least `min`. */
export function integer(min: number): (value: string) => number {
  return (value: string) => {
    const number = Number(value);
    if (!Number.isSafeInteger(number) || number < min) throw new InvalidArgumentError(`expected an integer of at least ${min}, got ${JSON.stringify(value)}`);
    return number;
  };
}

/** A commander argument parser for numbers (fractions allowed) of at least `min`. */
export function atLeast(min: number): (value: string) => number {
  return (value: string) => {
    const number = Number(value);
    if (!Number.isFinite(number) || number < min) throw new InvalidArgumentError(`expected a number of at least ${min}, got ${JSON.stringify(value)}`);
    return number;
  };
}

/** Parses "gpu=1,memory_gb=16" into {gpu: 1, memory_gb: 16}. */
export function resources(value: string): Record<string, number> {
  const result: Record<string, number> = {};
  for (const entry of value.split(",").map((part) => part.trim()).filter(Boolean)) {
    const match = /^([A-Za-z0-9._-]+)=(-?\d+(?:\.\d+)?)$/.exec(entry);
    if (!match) throw new InvalidArgumentError(`expected name=amount entries separated by commas (gpu=1,memory_gb=16), got ${JSON.stringify(entry)}`);
    result[match[1]!] = Number(match[2]);
  }
  return result;
}
