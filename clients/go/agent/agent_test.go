package agent_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"campfire.dev/clients/go/admin"
	"campfire.dev/clients/go/agent"
	adminv1 "campfire.dev/clients/go/gen/campfire/admin/v1"
	agentv1 "campfire.dev/clients/go/gen/campfire/agent/v1"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
	"campfire.dev/clients/go/internal/sitetest"
	"campfire.dev/clients/go/transport"
	"google.golang.org/grpc/codes"
)

// 3 MiB of float32: over the 512 KiB inline limit, so tasks are downloaded
// and results uploaded in chunks.
var largeShape = []uint64{768, 1024}

func newAgent(t *testing.T, site *sitetest.Site, client string, observe func(*agentv1.ConnectResponse)) *agent.Agent {
	t.Helper()
	a, err := agent.New(agent.Options{Options: transport.Options{Site: site.Address}, ClientName: client, AgentID: client + "-go", Observe: observe})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// signalWelcomes is an Observe function that signals each welcome on the channel.
func signalWelcomes(welcomes chan<- struct{}) func(*agentv1.ConnectResponse) {
	return func(message *agentv1.ConnectResponse) {
		if message.GetWelcome() != nil {
			welcomes <- struct{}{}
		}
	}
}

func session(t *testing.T, site *sitetest.Site) *admin.Session {
	t.Helper()
	s, err := admin.Dial(admin.Options{Options: transport.Options{Site: site.Address}, Token: sitetest.Token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// serve answers tasks with agent.PlusOne until the agent ends; it returns
// each task's disposition on the channel.
func serve(ctx context.Context, a *agent.Agent, dispositions chan<- agentv1.ResultDisposition) {
	for {
		task, err := a.NextTask(ctx)
		if err != nil {
			return
		}
		result, err := agent.PlusOne(task.Data)
		code := commonv1.ReturnCode_RETURN_CODE_OK
		if err != nil {
			code = commonv1.ReturnCode_RETURN_CODE_EXECUTION_EXCEPTION
		}
		disposition, err := a.Submit(ctx, task, code, result)
		if err == nil && dispositions != nil {
			dispositions <- disposition
		}
	}
}

// finish monitors a job to its end and returns its final meta.
func finish(t *testing.T, s *admin.Session, id string) *adminv1.JobMeta {
	t.Helper()
	var last *adminv1.JobMeta
	for update, err := range s.Monitor(context.Background(), id, 90*time.Second) {
		if err != nil {
			t.Fatalf("monitoring %s: %v", id, err)
		}
		last = update.GetMeta()
	}
	return last
}

// checkModel downloads the job's result and checks that the final model is the initial one plus `plus`.
func checkModel(t *testing.T, s *admin.Session, id string, initial sitetest.Model, plus float32) {
	t.Helper()
	dir := t.TempDir()
	if _, err := s.Download(context.Background(), id, dir); err != nil {
		t.Fatal(err)
	}
	final, err := sitetest.ReadSafetensors(filepath.Join(dir, "models", "final.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for name, tensor := range initial {
		got := final[name]
		if len(got.Values) != len(tensor.Values) {
			t.Fatalf("final %s has %d elements, want %d", name, len(got.Values), len(tensor.Values))
		}
		for i, value := range tensor.Values {
			if got.Values[i] != value+plus {
				t.Fatalf("final %s[%d] = %v, want %v + %v", name, i, got.Values[i], value, plus)
			}
		}
	}
}

func TestFedAvgWithGoAgentsInlineAndOverTheDataPlane(t *testing.T) {
	site := sitetest.Start(t)
	s := session(t, site)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	welcomes := make(chan *agentv1.Welcome, 2)
	dispositions := make(chan agentv1.ResultDisposition, 16)
	for _, client := range []string{"go-a", "go-b"} {
		a := newAgent(t, site, client, func(message *agentv1.ConnectResponse) {
			if message.GetWelcome() != nil {
				welcomes <- message.GetWelcome()
			}
		})
		go a.Run(ctx)
		go serve(ctx, a, dispositions)
	}
	for range 2 {
		if welcome := <-welcomes; welcome.GetProtocolVersion() != 2 {
			t.Fatalf("welcomed with protocol %d, want 2", welcome.GetProtocolVersion())
		}
	}
	initial := sitetest.Model{"small": sitetest.Ramp([]uint64{2, 3}, -1, 0.5), "large": sitetest.Ramp(largeShape, 0, 0.125)}
	id, err := s.SubmitFolder(ctx, sitetest.WriteFedAvgJob(t, "go-fedavg", 2, 3, initial, nil))
	if err != nil {
		t.Fatal(err)
	}
	if meta := finish(t, s, id); meta.GetStatus() != adminv1.RunStatus_RUN_STATUS_FINISHED_COMPLETED {
		t.Fatalf("job ended %s: %s", meta.GetStatus(), meta.GetEndReason())
	}
	checkModel(t, s, id, initial, 3)
	close(dispositions)
	accepted := 0
	for disposition := range dispositions {
		if disposition != agentv1.ResultDisposition_RESULT_DISPOSITION_ACCEPTED {
			t.Fatalf("a result was acknowledged %s", disposition)
		}
		accepted++
	}
	if accepted != 6 {
		t.Fatalf("%d results accepted, want 2 agents x 3 rounds", accepted)
	}
}

func TestAbortReachesTheTaskThenTheJobEndsWithBye(t *testing.T) {
	site := sitetest.Start(t)
	s := session(t, site)
	a := newAgent(t, site, "go-abort", nil)
	ended := make(chan error, 1)
	go func() { ended <- a.Run(context.Background()) }()
	initial := sitetest.Model{"w": sitetest.Ramp([]uint64{4}, 0, 1)}
	id, err := s.SubmitFolder(context.Background(), sitetest.WriteFedAvgJob(t, "go-abort", 1, 2, initial, nil))
	if err != nil {
		t.Fatal(err)
	}
	task, err := a.NextTask(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Abort(context.Background(), id, "stopped by the Go test"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-task.Context().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the task's context did not end after the job was aborted")
	}
	var aborted *agent.AbortedError
	if cause := context.Cause(task.Context()); !errors.As(cause, &aborted) || aborted.TaskID != task.ID {
		t.Fatalf("the task ended with %v, want an AbortedError for %s", cause, task.ID)
	}
	if _, err := a.Submit(context.Background(), task, commonv1.ReturnCode_RETURN_CODE_OK, task.Data); !errors.As(err, &aborted) {
		t.Fatalf("Submit of an aborted task returned %v, want the AbortedError", err)
	}
	var bye *agent.ByeError
	select {
	case err := <-ended:
		if !errors.As(err, &bye) || bye.Reason != agentv1.ByeReason_BYE_REASON_JOB_ENDED {
			t.Fatalf("Run ended with %v, want a bye for the job's end", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the site did not say bye after the job was aborted")
	}
	if _, err := a.NextTask(context.Background()); !errors.As(err, &bye) {
		t.Fatalf("NextTask after the bye returned %v, want the ByeError", err)
	}
	if meta, err := s.Meta(context.Background(), id); err != nil || meta.GetStatus() != adminv1.RunStatus_RUN_STATUS_FINISHED_ABORTED {
		t.Fatalf("job meta %v, %v; want FINISHED:ABORTED", meta.GetStatus(), err)
	}
}

func TestSiteRestartMidTaskTheAgentReconnectsAndResendsItsResult(t *testing.T) {
	site := sitetest.Start(t)
	s := session(t, site)
	welcomes := make(chan struct{}, 8)
	a := newAgent(t, site, "go-restart", signalWelcomes(welcomes))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	<-welcomes
	initial := sitetest.Model{"w": sitetest.Ramp(largeShape, 1, 0.25)}
	id, err := s.SubmitFolder(ctx, sitetest.WriteFedAvgJob(t, "go-restart", 1, 2, initial, nil))
	if err != nil {
		t.Fatal(err)
	}
	task, err := a.NextTask(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The site dies while the trainer works, and comes back on the same port and data.
	site.Restart()
	result, err := agent.PlusOne(task.Data)
	if err != nil {
		t.Fatal(err)
	}
	submitCtx, submitted := context.WithTimeout(ctx, 60*time.Second)
	defer submitted()
	disposition, err := a.Submit(submitCtx, task, commonv1.ReturnCode_RETURN_CODE_OK, result)
	if err != nil {
		t.Fatalf("the held result was not acknowledged after the restart: %v\nsite:\n%s", err, site.Output())
	}
	t.Logf("the result sent again after the restart was acknowledged %s", disposition)
	select {
	case <-welcomes:
	default:
		t.Fatal("the agent was not welcomed again after the restart")
	}
	go serve(ctx, a, nil)
	if meta := finish(t, s, id); meta.GetStatus() != adminv1.RunStatus_RUN_STATUS_FINISHED_COMPLETED || meta.GetResumeCount() != 1 {
		t.Fatalf("job ended %s (resumed %d times): %s", meta.GetStatus(), meta.GetResumeCount(), meta.GetEndReason())
	}
	checkModel(t, s, id, initial, 2)
}

func TestStopSaysByeAndTheSiteForgetsTheAgent(t *testing.T) {
	site := sitetest.Start(t)
	s := session(t, site)
	welcomed := make(chan struct{}, 1)
	a := newAgent(t, site, "go-stop", signalWelcomes(welcomed))
	ended := make(chan error, 1)
	go func() { ended <- a.Run(context.Background()) }()
	<-welcomed
	connected := func() bool {
		info, err := s.SystemInfo(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, client := range info.GetClients() {
			if client.GetName() == "go-stop" {
				return true
			}
		}
		return false
	}
	if !connected() {
		t.Fatal("the site does not list the welcomed agent's client")
	}
	a.Stop()
	if err := <-ended; !errors.Is(err, agent.ErrStopped) {
		t.Fatalf("Run ended with %v, want ErrStopped", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for connected() {
		if time.Now().After(deadline) {
			t.Fatal("the site still lists the client 10 s after the agent's bye")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAnInvalidClientNameIsRefusedWithoutReconnecting(t *testing.T) {
	site := sitetest.Start(t)
	a, err := agent.New(agent.Options{Options: transport.Options{Site: site.Address}, ClientName: "not a name!", AgentID: "go-refused"})
	if err != nil {
		t.Fatal(err)
	}
	var refused *agent.RefusedError
	if err := a.Run(context.Background()); !errors.As(err, &refused) || refused.Code != codes.InvalidArgument {
		t.Fatalf("Run returned %v, want a RefusedError with INVALID_ARGUMENT", err)
	}
}
