package admin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"campfire.dev/clients/go/admin"
	"campfire.dev/clients/go/agent"
	adminv1 "campfire.dev/clients/go/gen/campfire/admin/v1"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
	"campfire.dev/clients/go/internal/sitetest"
	"campfire.dev/clients/go/transport"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func dial(t *testing.T, site *sitetest.Site, token string) *admin.Session {
	t.Helper()
	s, err := admin.Dial(admin.Options{Options: transport.Options{Site: site.Address}, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// plusOneAgent joins the site as client and answers tasks with agent.PlusOne until the test ends.
func plusOneAgent(t *testing.T, site *sitetest.Site, client string) {
	a, err := agent.New(agent.Options{Options: transport.Options{Site: site.Address}, ClientName: client})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go a.Run(ctx)
	go func() {
		for {
			task, err := a.NextTask(ctx)
			if err != nil {
				return
			}
			result, _ := agent.PlusOne(task.Data)
			a.Submit(ctx, task, commonv1.ReturnCode_RETURN_CODE_OK, result)
		}
	}()
}

func TestLifecycleSubmitMonitorDownloadListCloneAbortDelete(t *testing.T) {
	site := sitetest.Start(t)
	s := dial(t, site, sitetest.Token)
	ctx := context.Background()
	plusOneAgent(t, site, "admin-a")
	plusOneAgent(t, site, "admin-b")
	folder := sitetest.WriteFedAvgJob(t, "go-admin", 2, 2, sitetest.Model{"w": sitetest.Ramp([]uint64{3, 2}, 0, 1)}, nil)

	id, err := s.SubmitFolder(ctx, folder)
	if err != nil {
		t.Fatal(err)
	}
	var statuses []adminv1.RunStatus
	var last *adminv1.MonitorJobResponse
	for update, err := range s.Monitor(ctx, id, 60*time.Second) {
		if err != nil {
			t.Fatal(err)
		}
		if len(statuses) == 0 || statuses[len(statuses)-1] != update.GetMeta().GetStatus() {
			statuses = append(statuses, update.GetMeta().GetStatus())
		}
		last = update
	}
	if last.GetReturnCode() != adminv1.MonitorReturnCode_MONITOR_RETURN_CODE_JOB_FINISHED || last.GetMeta().GetStatus() != adminv1.RunStatus_RUN_STATUS_FINISHED_COMPLETED {
		t.Fatalf("monitoring ended %s with %s (statuses %v)", last.GetReturnCode(), last.GetMeta().GetStatus(), statuses)
	}
	if !slices.Contains(statuses, adminv1.RunStatus_RUN_STATUS_RUNNING) {
		t.Fatalf("monitor never reported RUNNING: %v", statuses)
	}

	dir := t.TempDir()
	files, err := s.Download(ctx, id, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"job/meta.json", "models/final.safetensors", "metrics/rounds.jsonl"} {
		if !slices.Contains(files, want) {
			t.Fatalf("download lacks %s: %v", want, files)
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(want))); err != nil {
			t.Fatal(err)
		}
	}
	final, err := sitetest.ReadSafetensors(filepath.Join(dir, "models", "final.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if got := final["w"].Values; len(got) != 6 || got[0] != 2 || got[5] != 7 {
		t.Fatalf("final model %v, want the initial 0..5 plus 2 rounds of +1", got)
	}

	meta, err := s.Meta(ctx, id)
	if err != nil || meta.GetName() != "go-admin" || meta.GetSubmitter() != "go-admin" || meta.GetProgress().GetTotalRounds() != 2 {
		t.Fatalf("meta %v, %v", meta, err)
	}
	listed, err := s.List(ctx, &adminv1.ListJobsRequest{NamePrefix: "go-"})
	if err != nil || len(listed) != 1 || listed[0].GetJobId() != id {
		t.Fatalf("listing %v, %v; want the one job", listed, err)
	}

	// The clone may start at once (both agents are still there): abort it wherever it is.
	clone, err := s.Clone(ctx, id)
	if err != nil || clone == id {
		t.Fatalf("clone %q, %v", clone, err)
	}
	if meta, err := s.Meta(ctx, clone); err != nil || meta.GetClonedFrom() != id {
		t.Fatalf("clone's meta %v, %v; want cloned_from %s", meta, err, id)
	}
	state, err := s.Abort(ctx, clone, "the Go test aborts its clone")
	if err != nil {
		t.Fatal(err)
	}
	if state != adminv1.RunStatus_RUN_STATUS_FINISHED_ABORTED {
		// A running clone finishes aborting shortly after the call.
		for update, err := range s.Monitor(ctx, clone, 30*time.Second) {
			if err != nil {
				t.Fatal(err)
			}
			state = update.GetMeta().GetStatus()
		}
	}
	if state != adminv1.RunStatus_RUN_STATUS_FINISHED_ABORTED {
		t.Fatalf("the aborted clone is %s", state)
	}
	for _, job := range []string{clone, id} {
		if err := s.Delete(ctx, job); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Meta(ctx, job); status.Code(err) != codes.NotFound {
			t.Fatalf("meta of deleted job %s: %v, want NOT_FOUND", job, err)
		}
	}
}

func TestErrorsCarryTheirStatusCodeAndName(t *testing.T) {
	site := sitetest.Start(t)
	ctx := context.Background()

	for _, token := range []string{"", "wrong-token"} {
		_, err := dial(t, site, token).List(ctx, nil)
		var callErr *admin.Error
		if !errors.As(err, &callErr) || callErr.Code != codes.Unauthenticated || callErr.Method != "ListJobs" {
			t.Fatalf("token %q: %v, want UNAUTHENTICATED from ListJobs", token, err)
		}
	}

	s := dial(t, site, sitetest.Token)
	if _, err := s.Meta(ctx, "no-such-job"); status.Code(err) != codes.NotFound {
		t.Fatalf("meta of an unknown job: %v, want NOT_FOUND", err)
	}

	// min_clients 3 with one app on "@ALL" is fine at submit; a workflow argument out of range is not.
	bad := sitetest.WriteFedAvgJob(t, "go-bad", 1, 0, sitetest.Model{"w": sitetest.Ramp([]uint64{1}, 0, 1)}, nil)
	_, err := s.SubmitFolder(ctx, bad)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "num_rounds") {
		t.Fatalf("submitting num_rounds 0: %v, want INVALID_ARGUMENT naming num_rounds", err)
	}

	waiting := sitetest.WriteFedAvgJob(t, "go-waiting", 1, 1, sitetest.Model{"w": sitetest.Ramp([]uint64{1}, 0, 1)}, nil)
	id, err := s.SubmitFolder(ctx, waiting)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Download(ctx, id, t.TempDir()); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("downloading an unfinished job: %v, want FAILED_PRECONDITION", err)
	}

	var folderErr *admin.InvalidJobFolderError
	if _, err := s.SubmitFolder(ctx, t.TempDir()); !errors.As(err, &folderErr) || !strings.Contains(err.Error(), "meta.json") {
		t.Fatalf("submitting a folder without meta.json: %v", err)
	}
}
