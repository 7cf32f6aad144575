package main_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"campfire.dev/clients/go/admin"
	adminv1 "campfire.dev/clients/go/gen/campfire/admin/v1"
	"campfire.dev/clients/go/internal/sitetest"
	"campfire.dev/clients/go/transport"
)

// The example agent as a user runs it: built, started against a real site,
// it serves a FedAvg job to its end and exits 0 on the site's bye.
func TestExampleAgentServesAJobAndExitsOnBye(t *testing.T) {
	binary := filepath.Join(t.TempDir(), "example-agent")
	if output, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, output)
	}
	site := sitetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	command := exec.CommandContext(ctx, binary, "--site", site.Address, "--client", "example-go", "--agent-id", "example-go-1")
	done := make(chan []byte, 1)
	go func() {
		output, _ := command.CombinedOutput()
		done <- output
	}()

	s, err := admin.Dial(admin.Options{Options: transport.Options{Site: site.Address}, Token: sitetest.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := s.SubmitFolder(ctx, sitetest.WriteFedAvgJob(t, "example-go", 1, 2, sitetest.Model{"w": sitetest.Ramp([]uint64{2, 2}, 0, 1)}, nil))
	if err != nil {
		t.Fatal(err)
	}
	output := <-done
	if command.ProcessState == nil || command.ProcessState.ExitCode() != 0 {
		t.Fatalf("the example agent did not exit 0: %v\n%s", command.ProcessState, output)
	}
	for _, line := range []string{
		`(?m)^welcomed site=site protocol=2$`,
		`(?m)^task \S+ name=train job=` + regexp.QuoteMeta(id) + ` tensors=1$`,
		`(?m)^result \S+ ACCEPTED$`,
		`(?m)^bye BYE_REASON_JOB_ENDED `,
	} {
		if !regexp.MustCompile(line).Match(output) {
			t.Fatalf("no line matching %s in:\n%s", line, output)
		}
	}
	if meta, err := s.Meta(ctx, id); err != nil || meta.GetStatus() != adminv1.RunStatus_RUN_STATUS_FINISHED_COMPLETED {
		t.Fatalf("job %v, %v; want FINISHED:COMPLETED", meta.GetStatus(), err)
	}
}
