import { type ChannelCredentials, credentials } from "@grpc/grpc-js";
import { isLoopbackAddress } from "../site/transport/listen-address.js";
import { channelCredentials, certifyKit, type TlsKit } from "./kit.js";

/** How a client (agent or admin) reaches the site. */
export interface ClientTransportOptions {
  /** TLS with the project's CA, presenting the kit's certificate when it has one. */
  tls?: TlsKit;
  /** The name the site's certificate must carry, when it differs from the host dialled (a tunnel, a proxy). */
  tlsServerName?: string;
  /** Talk plain text to a site beyond loopback. Off by default: such a client refuses to start. */
  insecure?: boolean;
}

/**
 * The credentials for a channel to `address`: TLS when a kit is given (its
 * certificate checked first, so an expired one is reported here, by name,
 * rather than as a refused handshake); plain text only to a loopback address
 * unless `insecure` says otherwise.
 */
export function siteChannelCredentials(address: string, options: ClientTransportOptions): ChannelCredentials {
  if (options.tls) {
    if (options.tls.cert) certifyKit(options.tls);
    return channelCredentials(options.tls, options.tlsServerName);
  }
  if (!isLoopbackAddress(address) && !options.insecure) {
    throw new Error(`refusing to reach ${address} in plain text: give this client its kit (--tls-dir <kit>), or pass --insecure if the network itself is protected`);
  }
  return credentials.createInsecure();
}
