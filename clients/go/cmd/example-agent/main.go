// Command example-agent is a Campfire agent in Go built from nothing but the
// generated stubs and the agent package: it joins a site with protocol 2 and
// answers every task with its FLOAT32 tensors plus one (a stand-in for a
// training round), inline or over the chunked data plane, until the job ends.
//
//	go run ./cmd/example-agent --site 127.0.0.1:7443 --client hospital-a
//	go run ./cmd/example-agent --site localhost:7443 --client hospital-a --tls-dir kits/hospital-a
//
// It prints one line per event: "welcomed", "task", "result", "aborted", "bye".
// Exit status: 0 after the site's bye, 1 when the site refused the agent.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"campfire.dev/clients/go/agent"
	agentv1 "campfire.dev/clients/go/gen/campfire/agent/v1"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
)

func main() {
	var options agent.Options
	var delay time.Duration
	flag.StringVar(&options.Site, "site", "127.0.0.1:7443", "the site, host:port")
	flag.StringVar(&options.ClientName, "client", "", "the client this agent acts for (required)")
	flag.StringVar(&options.AgentID, "agent-id", "", "a stable agent id (default <client>-<random>)")
	flag.StringVar(&options.TLSDir, "tls-dir", "", "the client's kit folder (ca.crt, <name>.crt, <name>.key); plain text without")
	flag.StringVar(&options.ServerName, "tls-server-name", "", "the name in the site's certificate, when not the dialled host")
	flag.BoolVar(&options.Insecure, "insecure", false, "allow plain text to a site that is not on loopback")
	flag.DurationVar(&delay, "train-time", 0, "how long each task takes (to watch heartbeats and aborts)")
	flag.Parse()
	if options.ClientName == "" {
		fmt.Fprintln(os.Stderr, "--client is required")
		os.Exit(2)
	}
	options.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	options.Observe = func(message *agentv1.ConnectResponse) {
		switch {
		case message.GetWelcome() != nil:
			fmt.Printf("welcomed site=%s protocol=%d\n", message.GetWelcome().GetSiteName(), message.GetWelcome().GetProtocolVersion())
		case message.GetAbort() != nil:
			fmt.Printf("aborted task=%s reason=%q\n", message.GetAbort().GetTaskId(), message.GetAbort().GetReason())
		case message.GetBye() != nil:
			fmt.Printf("bye %s %q\n", message.GetBye().GetReason(), message.GetBye().GetMessage())
		}
	}
	a, err := agent.New(options)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	plusOne := func(task *agent.Task) (commonv1.ReturnCode, *commonv1.DataExchange) {
		fmt.Printf("task %s name=%s job=%s tensors=%d\n", task.ID, task.Name, task.JobID, len(task.Data.GetTensors()))
		select {
		case <-time.After(delay):
		case <-task.Context().Done():
			return commonv1.ReturnCode_RETURN_CODE_TASK_ABORTED, nil // the site no longer waits for it
		}
		result, err := agent.PlusOne(task.Data)
		if err != nil {
			return commonv1.ReturnCode_RETURN_CODE_EXECUTION_EXCEPTION, nil
		}
		return commonv1.ReturnCode_RETURN_CODE_OK, result
	}
	report := func(task *agent.Task, disposition agentv1.ResultDisposition, err error) {
		if err != nil {
			fmt.Printf("result %s not acknowledged: %v\n", task.ID, err)
			return
		}
		fmt.Printf("result %s %s\n", task.ID, strings.TrimPrefix(disposition.String(), "RESULT_DISPOSITION_"))
	}
	if err := a.Serve(ctx, plusOne, report); !agent.EndedNormally(err) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
