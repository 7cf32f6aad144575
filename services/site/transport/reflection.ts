import type { ServerDuplexStream, ServiceDefinition, UntypedServiceImplementation } from "@grpc/grpc-js";
import { fromBinary } from "@bufbuild/protobuf";
import { type DescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { fileDescriptorProtosBase64 } from "../../../gen/descriptors.js";
import {
  ServerReflectionService,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "../../../gen/grpc/reflection/v1/reflection.js";
import { status as Status } from "@grpc/grpc-js";

/**
 * The compiled descriptors of every .proto file, indexed for reflection. The
 * bytes served are exactly what buf compiled (gen/descriptors.ts), comments and
 * all, so grpcurl describes the same contract that stub generators read.
 */
class DescriptorIndex {
  private readonly bytesByFile = new Map<string, Buffer>();
  private readonly dependenciesByFile = new Map<string, string[]>();
  private readonly fileBySymbol = new Map<string, string>();

  constructor(encodedFiles: readonly string[]) {
    for (const encoded of encodedFiles) {
      const bytes = Buffer.from(encoded, "base64");
      const file = fromBinary(FileDescriptorProtoSchema, bytes);
      this.bytesByFile.set(file.name, bytes);
      this.dependenciesByFile.set(file.name, file.dependency);
      const prefix = file.package ? `${file.package}.` : "";
      const addMessages = (messages: DescriptorProto[], scope: string) => {
        for (const message of messages) {
          const name = scope + message.name;
          this.fileBySymbol.set(name, file.name);
          for (const nested of message.enumType) this.fileBySymbol.set(`${name}.${nested.name}`, file.name);
          addMessages(message.nestedType, `${name}.`);
        }
      };
      addMessages(file.messageType, prefix);
      for (const enumType of file.enumType) this.fileBySymbol.set(prefix + enumType.name, file.name);
      for (const service of file.service) {
        this.fileBySymbol.set(prefix + service.name, file.name);
        for (const method of service.method) this.fileBySymbol.set(`${prefix}${service.name}.${method.name}`, file.name);
      }
    }
  }

  /** The file and everything it imports, transitively; undefined for an unknown file. */
  withDependencies(fileName: string): Buffer[] | undefined {
    if (!this.bytesByFile.has(fileName)) return undefined;
    const seen = new Set<string>();
    const visit = (name: string) => {
      if (seen.has(name)) return;
      seen.add(name);
      for (const dependency of this.dependenciesByFile.get(name) ?? []) visit(dependency);
    };
    visit(fileName);
    return [...seen].map((name) => this.bytesByFile.get(name)!);
  }

  fileOfSymbol(symbol: string): string | undefined {
    return this.fileBySymbol.get(symbol.replace(/^\./, ""));
  }
}

const index = new DescriptorIndex(fileDescriptorProtosBase64);

/** Answers one reflection request. */
function answer(request: ServerReflectionRequest, serviceNames: readonly string[]): ServerReflectionResponse {
  const base = { validHost: request.host, originalRequest: request };
  const notFound = (message: string): ServerReflectionResponse => ({
    ...base,
    messageResponse: { $case: "errorResponse", value: { errorCode: Status.NOT_FOUND, errorMessage: message } },
  });
  const files = (fileName: string | undefined, what: string): ServerReflectionResponse => {
    const descriptors = fileName === undefined ? undefined : index.withDependencies(fileName);
    if (!descriptors) return notFound(`${what} is not known to this server`);
    return { ...base, messageResponse: { $case: "fileDescriptorResponse", value: { fileDescriptorProto: descriptors } } };
  };
  const body = request.messageRequest;
  switch (body?.$case) {
    case "listServices":
      return { ...base, messageResponse: { $case: "listServicesResponse", value: { service: serviceNames.map((name) => ({ name })) } } };
    case "fileByFilename":
      return files(body.value, `file ${body.value}`);
    case "fileContainingSymbol":
      return files(index.fileOfSymbol(body.value), `symbol ${body.value}`);
    case "fileContainingExtension":
      return notFound(`no extensions of ${body.value.containingType} are defined`);
    case "allExtensionNumbersOfType":
      return { ...base, messageResponse: { $case: "allExtensionNumbersResponse", value: { baseTypeName: body.value, extensionNumber: [] } } };
    case undefined:
      return { ...base, messageResponse: { $case: "errorResponse", value: { errorCode: Status.INVALID_ARGUMENT, errorMessage: "message_request is not set" } } };
  }
}

/**
 * The reflection service definitions (v1, and v1alpha for older tools: the two
 * differ only in package name) with their handler.
 */
export function reflectionServices(serviceNames: readonly string[]): Array<[ServiceDefinition, UntypedServiceImplementation]> {
  const implementation = {
    serverReflectionInfo(call: ServerDuplexStream<ServerReflectionRequest, ServerReflectionResponse>) {
      call.on("data", (request: ServerReflectionRequest) => call.write(answer(request, serviceNames)));
      call.on("end", () => call.end());
    },
  };
  const v1alpha = Object.fromEntries(
    Object.entries(ServerReflectionService).map(([name, method]) => [
      name,
      { ...method, path: method.path.replace("grpc.reflection.v1.", "grpc.reflection.v1alpha.") },
    ]),
  ) as unknown as ServiceDefinition;
  return [
    [ServerReflectionService as unknown as ServiceDefinition, implementation],
    [v1alpha, implementation],
  ];
}
