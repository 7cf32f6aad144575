package agent_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"campfire.dev/clients/go/admin"
	"campfire.dev/clients/go/agent"
	adminv1 "campfire.dev/clients/go/gen/campfire/admin/v1"
	"campfire.dev/clients/go/internal/sitetest"
	"campfire.dev/clients/go/transport"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Over mutual TLS with kits from `campfire provision`: an agent joins with
// its client's kit, an admin calls with its own (no token), a hello for
// another client than the certificate names is refused, and plain text is
// not answered.
func TestMutualTLSWithProvisionedKits(t *testing.T) {
	kits := sitetest.Provision(t)
	site := sitetest.Start(t, "--tls-dir", filepath.Join(kits, "site"))
	tls := func(kit string) transport.Options {
		return transport.Options{Site: site.Address, TLSDir: filepath.Join(kits, kit)}
	}

	welcomed := make(chan struct{}, 1)
	a, err := agent.New(agent.Options{Options: tls("hospital-a"), ClientName: "hospital-a", AgentID: "go-tls-a", Observe: signalWelcomes(welcomed)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	<-welcomed

	s, err := admin.Dial(admin.Options{Options: tls("alice@a.org")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	info, err := s.SystemInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(info.GetClients(), func(client *adminv1.ClientInfo) bool { return client.GetName() == "hospital-a" }) {
		t.Fatalf("the site does not list hospital-a: %v", info.GetClients())
	}

	impostor, err := agent.New(agent.Options{Options: tls("hospital-a"), ClientName: "hospital-b", AgentID: "go-tls-impostor"})
	if err != nil {
		t.Fatal(err)
	}
	var refused *agent.RefusedError
	if err := impostor.Run(ctx); !errors.As(err, &refused) || refused.Code != codes.PermissionDenied {
		t.Fatalf("a hello as hospital-b with hospital-a's certificate ended %v, want PERMISSION_DENIED", err)
	}

	plain, err := admin.Dial(admin.Options{Options: transport.Options{Site: site.Address}})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.List(ctx, nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("a plain-text call to the TLS site: %v, want UNAVAILABLE", err)
	}
}
