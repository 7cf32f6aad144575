package dev.campfire.example;

import campfire.admin.v1.Job.JobMeta;
import campfire.admin.v1.SessionServiceGrpc;
import campfire.admin.v1.SessionServiceOuterClass.GetJobMetaRequest;
import campfire.admin.v1.SessionServiceOuterClass.GetSystemInfoRequest;
import campfire.admin.v1.SessionServiceOuterClass.GetSystemInfoResponse;
import campfire.admin.v1.SessionServiceOuterClass.ListJobsRequest;
import io.grpc.CallCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import java.io.File;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;

/**
 * A Campfire admin client built from nothing but the generated stubs: it
 * describes the site, lists every job, and prints one job's meta.
 *
 * <pre>
 * java -cp ... dev.campfire.example.Admin 127.0.0.1:7443 [job-id]                    plain text, loopback
 * CAMPFIRE_TOKEN=s3cret java -cp ... dev.campfire.example.Admin 127.0.0.1:7443        a bearer token
 * CAMPFIRE_TLS_DIR=kits/alice@a.org java -cp ... dev.campfire.example.Admin localhost:7443   mutual TLS with a kit
 * </pre>
 *
 * Exit status: 0, or 1 with the gRPC status the site answered (for example
 * UNAUTHENTICATED without the token, NOT_FOUND for an unknown job id).
 */
public final class Admin {
  private Admin() {}

  /** Sends "authorization: Bearer &lt;token&gt;" on every call. */
  static CallCredentials bearer(String token) {
    Metadata.Key<String> authorization = Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    return new CallCredentials() {
      @Override
      public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
        Metadata headers = new Metadata();
        headers.put(authorization, "Bearer " + token);
        applier.apply(headers);
      }
    };
  }

  /** Plain text without a kit (a site on loopback); with one, trust only the project CA and present the admin's certificate. */
  static ManagedChannel channel(String site, String tlsDir) throws Exception {
    if (tlsDir == null || tlsDir.isEmpty()) {
      return Grpc.newChannelBuilder(site, InsecureChannelCredentials.create()).maxInboundMessageSize(64 << 20).build();
    }
    File kit = new File(tlsDir);
    String name = kit.getName();
    TlsChannelCredentials.Builder tls = TlsChannelCredentials.newBuilder()
        .trustManager(new File(kit, "ca.crt"))
        .keyManager(new File(kit, name + ".crt"), new File(kit, name + ".key"));
    return Grpc.newChannelBuilder(site, tls.build()).maxInboundMessageSize(64 << 20).build();
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: Admin <host:port> [job-id]");
      System.exit(2);
    }
    ManagedChannel channel = channel(args[0], System.getenv("CAMPFIRE_TLS_DIR"));
    try {
      SessionServiceGrpc.SessionServiceBlockingStub session = SessionServiceGrpc.newBlockingStub(channel);
      String token = System.getenv("CAMPFIRE_TOKEN");
      if (token != null && !token.isEmpty()) {
        session = session.withCallCredentials(bearer(token));
      }
      session = session.withDeadlineAfter(30, TimeUnit.SECONDS);
      GetSystemInfoResponse info = session.getSystemInfo(GetSystemInfoRequest.getDefaultInstance());
      System.out.printf("site %s (%s), %d clients connected%n", info.getSite().getName(), info.getSite().getStatus(), info.getClientsCount());
      for (JobMeta job : session.listJobs(ListJobsRequest.newBuilder().setAllSubmitters(true).build()).getJobsList()) {
        System.out.printf("job %s %s %s%n", job.getJobId(), job.getName(), job.getStatus());
      }
      if (args.length > 1) {
        JobMeta meta = session.getJobMeta(GetJobMetaRequest.newBuilder().setJobId(args[1]).build()).getMeta();
        System.out.printf("meta %s status=%s round=%d/%d%n", meta.getJobId(), meta.getStatus(), meta.getProgress().getCurrentRound(), meta.getProgress().getTotalRounds());
      }
    } catch (StatusRuntimeException error) {
      System.err.printf("%s: %s%n", error.getStatus().getCode(), error.getStatus().getDescription());
      System.exit(1);
    } finally {
      channel.shutdownNow();
    }
  }
}
