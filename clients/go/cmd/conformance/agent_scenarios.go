package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"campfire.dev/clients/go/agent"
	agentv1 "campfire.dev/clients/go/gen/campfire/agent/v1"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
	"campfire.dev/clients/go/transport"
	"google.golang.org/grpc"
)

// newAgent is the library agent of the agent scenarios: a stable id, quick
// reconnects, and a `welcome` line per welcome.
func newAgent() (*agent.Agent, error) {
	return agent.New(agent.Options{
		Options:      transport.Options{Site: env("CAMPFIRE_SITE")},
		ClientName:   env("CAMPFIRE_CLIENT"),
		ReconnectMin: 100 * time.Millisecond,
		ReconnectMax: time.Second,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Observe: func(message *agentv1.ConnectResponse) {
			if welcome := message.GetWelcome(); welcome != nil {
				emit("welcome", map[string]any{"protocol": welcome.GetProtocolVersion(), "agent_id": welcome.GetAgentId()})
			}
		},
	})
}

// serveUntilBye runs the conformance trainer until the site says the job
// ended: "add_one" answers every tensor plus one (after the data meta's
// "delay_ms"), "wait" holds the task until the site aborts it.
func serveUntilBye(ctx context.Context) error {
	a, err := newAgent()
	if err != nil {
		return err
	}
	handle := func(task *agent.Task) (commonv1.ReturnCode, *commonv1.DataExchange) {
		emit("task", map[string]any{"task_id": task.ID, "task_name": task.Name})
		if task.Name == "wait" {
			<-task.Context().Done()
			var aborted *agent.AbortedError
			if errors.As(context.Cause(task.Context()), &aborted) {
				emit("aborted", map[string]any{"task_id": task.ID})
			}
			return commonv1.ReturnCode_RETURN_CODE_TASK_ABORTED, nil
		}
		if delay, ok := task.Data.GetMeta().GetFields()["delay_ms"]; ok {
			select {
			case <-time.After(time.Duration(delay.GetNumberValue()) * time.Millisecond):
			case <-task.Context().Done():
			}
		}
		result, err := agent.PlusOne(task.Data)
		if err != nil {
			return commonv1.ReturnCode_RETURN_CODE_EXECUTION_EXCEPTION, nil
		}
		return commonv1.ReturnCode_RETURN_CODE_OK, result
	}
	settled := func(task *agent.Task, disposition agentv1.ResultDisposition, err error) {
		if task.Name == "wait" {
			return // aborted: never answered
		}
		accepted := err == nil && (disposition == agentv1.ResultDisposition_RESULT_DISPOSITION_ACCEPTED || disposition == agentv1.ResultDisposition_RESULT_DISPOSITION_DUPLICATE)
		emit("result", map[string]any{"task_id": task.ID, "accepted": accepted})
	}
	err = a.Serve(ctx, handle, settled)
	var bye *agent.ByeError
	if errors.As(err, &bye) && bye.Reason == agentv1.ByeReason_BYE_REASON_JOB_ENDED {
		emit("bye", map[string]any{"reason": bye.Reason.String()})
		return nil
	}
	return fmt.Errorf("the agent ended without the job's bye: %w", err)
}

// agentHello joins with the library (protocol 2), then offers protocols 1
// and 99 on raw streams of their own, and stops the agent (bye).
func agentHello(ctx context.Context) error {
	a, err := newAgent()
	if err != nil {
		return err
	}
	ended := make(chan error, 1)
	go func() { ended <- a.Run(ctx) }()
	for a.Welcome() == nil {
		select {
		case err := <-ended:
			return fmt.Errorf("the agent ended before its welcome: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	raw, err := rawClient()
	if err != nil {
		return err
	}
	defer raw.close()
	for _, offered := range []uint32{1, 99} {
		streamCtx, cancel := context.WithCancel(ctx)
		stream, err := raw.agent.Connect(streamCtx)
		if err != nil {
			cancel()
			return err
		}
		hello := &agentv1.Hello{ClientName: env("CAMPFIRE_CLIENT"), AgentId: fmt.Sprintf("%s-v%d", a.ID(), offered), ProtocolVersion: offered}
		if err := stream.Send(&agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
			cancel()
			return err
		}
		welcome, err := stream.Recv()
		if err != nil || welcome.GetWelcome() == nil {
			cancel()
			return fmt.Errorf("hello with protocol %d: no welcome (%v)", offered, err)
		}
		emit("negotiated", map[string]any{"offered": offered, "protocol": welcome.GetWelcome().GetProtocolVersion()})
		stream.CloseSend()
		cancel()
	}
	a.Stop()
	if err := <-ended; !errors.Is(err, agent.ErrStopped) {
		return fmt.Errorf("the agent ended with %v", err)
	}
	return nil
}

// rawConnection is the generated stubs on a connection of their own, for
// what no library would send.
type rawConnection struct {
	connection *grpc.ClientConn
	agent      agentv1.AgentServiceClient
}

func rawClient() (*rawConnection, error) {
	// The oversized case sends more than the site takes; grpc-go's own send limit is far above it.
	connection, err := transport.Dial(transport.Options{Site: env("CAMPFIRE_SITE")})
	if err != nil {
		return nil, err
	}
	return &rawConnection{connection: connection, agent: agentv1.NewAgentServiceClient(connection)}, nil
}

func (r *rawConnection) close() { r.connection.Close() }
