package main

import (
	"context"
	"path/filepath"
	"slices"

	"campfire.dev/clients/go/admin"
	adminv1 "campfire.dev/clients/go/gen/campfire/admin/v1"
	"campfire.dev/clients/go/transport"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func dialSession(token string) (*admin.Session, error) {
	return admin.Dial(admin.Options{Options: transport.Options{Site: env("CAMPFIRE_SITE")}, Token: token})
}

// adminLifecycle submits the job folder, lists, monitors it to its end,
// reads its meta, downloads its result, clones it, aborts the clone and
// deletes both.
func adminLifecycle(ctx context.Context) error {
	s, err := dialSession(env("CAMPFIRE_TOKEN"))
	if err != nil {
		return err
	}
	defer s.Close()
	id, err := s.SubmitFolder(ctx, env("CAMPFIRE_JOB_DIR"))
	if err != nil {
		return err
	}
	emit("submitted", map[string]any{"job_id": id})
	jobs, err := s.List(ctx, nil)
	if err != nil {
		return err
	}
	ids := []string{}
	for _, job := range jobs {
		ids = append(ids, job.GetJobId())
	}
	emit("listed", map[string]any{"job_ids": ids})
	for update, err := range s.Monitor(ctx, id, 0) {
		if err != nil {
			return err
		}
		emit("status", map[string]any{"status": update.GetMeta().GetStatus().String()})
		if code := update.GetReturnCode(); code != adminv1.MonitorReturnCode_MONITOR_RETURN_CODE_UNSPECIFIED {
			emit("monitor_end", map[string]any{"return_code": code.String()})
		}
	}
	meta, err := s.Meta(ctx, id)
	if err != nil {
		return err
	}
	emit("meta", map[string]any{"status": meta.GetStatus().String()})
	files, err := s.Download(ctx, id, filepath.Join(env("CAMPFIRE_WORK_DIR"), "download", id))
	if err != nil {
		return err
	}
	slices.Sort(files)
	emit("downloaded", map[string]any{"files": files})
	clone, err := s.Clone(ctx, id)
	if err != nil {
		return err
	}
	emit("cloned", map[string]any{"job_id": clone})
	state, err := s.Abort(ctx, clone, "conformance")
	if err != nil {
		return err
	}
	emit("aborted", map[string]any{"job_id": clone, "status": state.String()})
	for _, job := range []string{id, clone} {
		if err := s.Delete(ctx, job); err != nil {
			return err
		}
		emit("deleted", map[string]any{"job_id": job})
	}
	return nil
}

// adminErrors makes each refused call and prints its status.
func adminErrors(ctx context.Context) error {
	for _, c := range []struct{ name, token string }{{"no-token", ""}, {"bad-token", "not-a-token"}} {
		s, err := dialSession(c.token)
		if err != nil {
			return err
		}
		_, err = s.List(ctx, nil)
		s.Close()
		report(c.name, err)
	}
	s, err := dialSession(env("CAMPFIRE_TOKEN"))
	if err != nil {
		return err
	}
	defer s.Close()
	_, err = s.Meta(ctx, "no-such-job")
	report("unknown-job", err)

	definition, err := admin.ReadJobFolder(env("CAMPFIRE_JOB_DIR"))
	if err != nil {
		return err
	}
	unnamed := proto.CloneOf(definition)
	unnamed.Name = ""
	_, err = s.Submit(ctx, unnamed)
	report("invalid-job", err)
	unknownWorkflow := proto.CloneOf(definition)
	for _, app := range unknownWorkflow.GetApps() {
		if app.GetServerConfig() != nil {
			app.ServerConfig.Fields["workflow"] = structpb.NewStringValue("no-such-workflow")
		}
	}
	_, err = s.Submit(ctx, unknownWorkflow)
	report("unknown-workflow", err)

	id, err := s.Submit(ctx, definition)
	if err != nil {
		return err
	}
	_, err = s.Download(ctx, id, env("CAMPFIRE_WORK_DIR"))
	report("not-finished", err)
	if _, err := s.Abort(ctx, id, "conformance"); err != nil {
		return err
	}
	return s.Delete(ctx, id)
}

// report prints a call's status; code 0 when it unexpectedly succeeded.
func report(name string, err error) {
	if err == nil {
		emit("status", map[string]any{"case": name, "code": 0, "message": ""})
		return
	}
	statusLine(name, err)
}
