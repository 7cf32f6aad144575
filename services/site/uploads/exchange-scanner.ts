import { DataExchange, DataKind } from "../../../gen/campfire/common/v1/exchange.js";
import { DType } from "../../../gen/campfire/common/v1/tensor.js";
import { encodeBytesMessage } from "../../shared/payload.js";
import { allFiniteFloat32Bytes } from "../../shared/float32-kernels/index.mjs";

/** A tensor of an upload, located in it: its bytes are `length` bytes at `offset` of the upload. */
export interface ScannedTensor {
  name: string;
  dtype: DType;
  shape: number[];
  offset: number;
  length: number;
  /** FLOAT32 data checked while it streamed: whether every element is finite. Undefined when not checked (another dtype, or a dtype that came after the data). */
  finite: boolean | undefined;
}

/** What a scanned upload holds besides its tensors' bytes. */
export interface ScannedExchange {
  kind: DataKind;
  tensors: ScannedTensor[];
  values: DataExchange["values"];
  meta: DataExchange["meta"];
}

/** The largest name, packed shape or Struct field an upload may carry: only tensor data may be large. */
const MAX_FIELD_BYTES = 16 * 1024 * 1024;
/** More tensors than this in one result are refused: each costs an index entry while the upload streams. */
export const MAX_TENSORS = 100_000;

type State = "tag" | "varint" | "length" | "collect" | "data" | "skip";

/**
 * Reads a DataExchange's protobuf encoding as it streams past, chunk by chunk,
 * without keeping it: what it keeps is an index (each tensor's name, dtype,
 * shape and where its bytes lie in the stream) and the small fields. FLOAT32
 * tensors are checked for NaN and Infinity as their bytes go by, so that a
 * result can be refused before anything of it reaches an aggregate. Handles
 * any field order, unknown fields (skipped, as protobuf decoders do) and
 * unpacked shapes; the first problem found stops the scan and is kept.
 */
export class ExchangeScanner {
  problem: string | undefined;
  private position = 0;
  private state: State = "tag";
  private field = 0;
  private wireType = 0;
  private varint = 0;
  private varintScale = 1;
  private varintBytes = 0;
  private remaining = 0;
  private collected: Buffer[] = [];
  private kind = DataKind.DATA_KIND_UNSPECIFIED;
  private readonly tensors: ScannedTensor[] = [];
  /** The tensor being read and where its message ends in the stream. */
  private tensor: { entry: ScannedTensor; end: number } | undefined;
  /** Fields 3 and 4 (values, meta) as they came, decoded at the end. */
  private readonly structs: Buffer[] = [];
  private checking = false;
  private readonly carry = new Uint8Array(4);
  private carryLength = 0;

  /** `size`: the announced length of the whole encoding. */
  constructor(private readonly size: number) {}

  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length && !this.problem) {
      if (this.state === "data" || this.state === "skip" || this.state === "collect") {
        const take = Math.min(this.remaining, chunk.length - at);
        const bytes = chunk.subarray(at, at + take);
        if (this.state === "collect") this.collected.push(Buffer.from(bytes));
        else if (this.state === "data" && this.checking) this.checkFinite(bytes);
        at += take;
        this.position += take;
        this.remaining -= take;
        if (this.remaining === 0) this.fieldDone();
        continue;
      }
      const byte = chunk[at++]!;
      this.position++;
      this.varint += (byte & 0x7f) * this.varintScale;
      this.varintScale *= 128;
      if (++this.varintBytes > 10) return this.fail("a varint is longer than 10 bytes");
      if (byte & 0x80) continue;
      const value = this.varint;
      this.varint = 0;
      this.varintScale = 1;
      this.varintBytes = 0;
      if (this.state === "tag") this.tag(value);
      else if (this.state === "varint") this.varintField(value);
      else this.lengthField(value);
    }
  }

  /** The index, once every announced byte went by; or the problem. */
  finish(): { exchange: ScannedExchange } | { problem: string } {
    if (!this.problem && this.position !== this.size) this.fail(`received ${this.position} bytes, but ${this.size} were announced`);
    if (!this.problem && (this.state !== "tag" || this.varintBytes > 0)) this.fail("the encoding ends inside a field");
    if (!this.problem && this.tensor) this.fail(`tensors[${this.tensors.length}]: the encoding ends inside the tensor`);
    if (this.problem) return { problem: this.problem };
    let small: DataExchange;
    try {
      small = DataExchange.decode(Buffer.concat(this.structs));
    } catch (error) {
      return { problem: `values or meta: ${(error as Error).message}` };
    }
    return { exchange: { kind: this.kind, tensors: this.tensors, values: small.values, meta: small.meta } };
  }

  private tag(tag: number): void {
    this.field = Math.floor(tag / 8);
    this.wireType = tag % 8;
    if (this.field === 0) return this.fail("field number 0 is not valid protobuf");
    if (this.wireType === 0) this.state = "varint";
    else if (this.wireType === 2) this.state = "length";
    else if (this.wireType === 1 || this.wireType === 5) this.expect("skip", this.wireType === 1 ? 8 : 4);
    else this.fail(`field ${this.field}: wire type ${this.wireType} is not used by DataExchange`);
  }

  private varintField(value: number): void {
    if (!this.tensor && this.field === 1) this.kind = value;
    else if (this.tensor?.entry && this.field === 2) this.tensor.entry.dtype = value;
    else if (this.tensor && this.field === 3) this.tensor.entry.shape.push(value);
    this.fieldDone();
  }

  private lengthField(length: number): void {
    const end = this.tensor?.end ?? this.size;
    if (this.position + length > end) return this.fail(`field ${this.field}: ${length} bytes run past the end of its ${this.tensor ? "tensor" : "message"}`);
    if (!this.tensor && this.field === 2) {
      if (this.tensors.length >= MAX_TENSORS) return this.fail(`more than ${MAX_TENSORS} tensors`);
      const entry: ScannedTensor = { name: "", dtype: DType.D_TYPE_UNSPECIFIED, shape: [], offset: this.position, length: 0, finite: undefined };
      this.tensor = { entry, end: this.position + length };
      this.state = "tag";
      return this.closeTensorsAtEnd();
    }
    if (this.tensor && this.field === 4) {
      Object.assign(this.tensor.entry, { offset: this.position, length, finite: undefined });
      this.checking = this.tensor.entry.dtype === DType.D_TYPE_FLOAT32;
      if (this.checking) this.tensor.entry.finite = true;
      this.carryLength = 0;
      return this.expect("data", length);
    }
    const collect = (!this.tensor && (this.field === 3 || this.field === 4)) || (this.tensor && (this.field === 1 || this.field === 3));
    if (!collect) return this.expect("skip", length);
    if (length > MAX_FIELD_BYTES) return this.fail(`field ${this.field}: ${length} bytes, more than the ${MAX_FIELD_BYTES} allowed outside tensor data`);
    this.collected = [];
    this.expect("collect", length);
  }

  private expect(state: State, length: number): void {
    this.state = state;
    this.remaining = length;
    if (length === 0) this.fieldDone();
  }

  /** A field ended: keep what it collected, and close the tensors whose message it ended. */
  private fieldDone(): void {
    if (this.state === "collect") {
      const bytes = Buffer.concat(this.collected);
      this.collected = [];
      if (!this.tensor) this.structs.push(encodeBytesMessage((this.field << 3) | 2, bytes));
      else if (this.field === 1) this.tensor.entry.name = bytes.toString("utf8");
      else this.readPackedShape(bytes);
    }
    this.checking = false;
    this.state = "tag";
    this.closeTensorsAtEnd();
  }

  private closeTensorsAtEnd(): void {
    if (!this.tensor || this.position < this.tensor.end) return;
    if (this.position > this.tensor.end) return this.fail(`tensors[${this.tensors.length}]: a field runs past the end of the tensor`);
    this.tensors.push(this.tensor.entry);
    this.tensor = undefined;
  }

  private readPackedShape(bytes: Buffer): void {
    let value = 0;
    let scale = 1;
    for (const byte of bytes) {
      value += (byte & 0x7f) * scale;
      scale *= 128;
      if (byte & 0x80) continue;
      this.tensor!.entry.shape.push(value);
      value = 0;
      scale = 1;
    }
    if (scale !== 1) this.fail(`tensors[${this.tensors.length}].shape: the packed shape ends inside a varint`);
  }

  /** Checks FLOAT32 bytes as they pass; an element split across chunks waits in `carry`. */
  private checkFinite(bytes: Uint8Array): void {
    const entry = this.tensor!.entry;
    if (entry.finite === false) return;
    let from = 0;
    if (this.carryLength) {
      from = Math.min(4 - this.carryLength, bytes.length);
      this.carry.set(bytes.subarray(0, from), this.carryLength);
      this.carryLength += from;
      if (this.carryLength < 4) return;
      this.carryLength = 0;
      if (!allFiniteFloat32Bytes(this.carry)) return void (entry.finite = false);
    }
    const whole = from + ((bytes.length - from) & ~3);
    if (!allFiniteFloat32Bytes(bytes.subarray(from, whole))) return void (entry.finite = false);
    this.carry.set(bytes.subarray(whole));
    this.carryLength = bytes.length - whole;
  }

  private fail(problem: string): void {
    this.problem ??= problem;
  }
}
