package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"campfire.dev/clients/go/agent"
	agentv1 "campfire.dev/clients/go/gen/campfire/agent/v1"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func helloMessage(hello *agentv1.Hello) *agentv1.ConnectRequest {
	return &agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_Hello{Hello: hello}}
}

func resultMessage(result *agentv1.TaskResult) *agentv1.ConnectRequest {
	return &agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_Result{Result: result}}
}

// nextOf reads the stream until a message for which pick returns non-nil.
func nextOf[T any](stream agentv1.AgentService_ConnectClient, pick func(*agentv1.ConnectResponse) *T) (*T, error) {
	for {
		message, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if found := pick(message); found != nil {
			return found, nil
		}
	}
}

func resultAckOf(message *agentv1.ConnectResponse) *agentv1.ResultAck {
	if message.GetResultAck() != nil {
		return message.GetResultAck()
	}
	return message.GetTask().GetResultAck()
}

// duplicateStale answers a task, sends the same result again, then a result
// for a task the site never sent, printing each acknowledgement.
func duplicateStale(ctx context.Context) error {
	raw, err := rawClient()
	if err != nil {
		return err
	}
	defer raw.close()
	stream, err := raw.agent.Connect(ctx)
	if err != nil {
		return err
	}
	client := env("CAMPFIRE_CLIENT")
	if err := stream.Send(helloMessage(&agentv1.Hello{ClientName: client, AgentId: client + "-raw", ProtocolVersion: 2})); err != nil {
		return err
	}
	task, err := nextOf(stream, (*agentv1.ConnectResponse).GetTask)
	if err != nil {
		return fmt.Errorf("waiting for a task: %w", err)
	}
	data := task.GetPayload().GetInline()
	if data == nil {
		return errors.New("the task's data did not come inline")
	}
	answer, err := agent.PlusOne(data)
	if err != nil {
		return err
	}
	result := &agentv1.TaskResult{TaskId: task.GetTaskId(), ReturnCode: commonv1.ReturnCode_RETURN_CODE_OK, Payload: &agentv1.Payload{Body: &agentv1.Payload_Inline{Inline: answer}}}
	stale := &agentv1.TaskResult{TaskId: "never-sent-1", ReturnCode: commonv1.ReturnCode_RETURN_CODE_OK, Payload: result.GetPayload()}
	for _, sent := range []*agentv1.TaskResult{result, result, stale} {
		if err := stream.Send(resultMessage(sent)); err != nil {
			return err
		}
		ack, err := nextOf(stream, resultAckOf)
		if err != nil {
			return fmt.Errorf("waiting for the acknowledgement of %s: %w", sent.GetTaskId(), err)
		}
		emit("ack", map[string]any{"task_id": ack.GetTaskId(), "status": ack.GetDisposition().String()})
	}
	bye := &agentv1.Bye{Reason: agentv1.ByeReason_BYE_REASON_AGENT_STOPPING, Message: "done"}
	if err := stream.Send(&agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_Bye{Bye: bye}}); err != nil {
		return err
	}
	return stream.CloseSend()
}

// agentErrors breaks the protocol one way per stream and prints the status each ends with.
func agentErrors(ctx context.Context) error {
	raw, err := rawClient()
	if err != nil {
		return err
	}
	defer raw.close()
	client := env("CAMPFIRE_CLIENT")
	hello := func(edit func(*agentv1.Hello)) *agentv1.ConnectRequest {
		message := &agentv1.Hello{ClientName: client, AgentId: client + "-errors", ProtocolVersion: 2}
		if edit != nil {
			edit(message)
		}
		return helloMessage(message)
	}
	heartbeat := &agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_Heartbeat{Heartbeat: &agentv1.Heartbeat{Sequence: 1, SentAt: timestamppb.Now()}}}
	big := &commonv1.DataExchange{Kind: commonv1.DataKind_DATA_KIND_WEIGHTS, Tensors: []*commonv1.Tensor{{Name: "big", Dtype: commonv1.DType_D_TYPE_FLOAT32, Shape: []uint64{3 * 256 * 1024}, Data: make([]byte, 3<<20)}}}
	oversized := resultMessage(&agentv1.TaskResult{TaskId: "t", ReturnCode: commonv1.ReturnCode_RETURN_CODE_OK, Payload: &agentv1.Payload{Body: &agentv1.Payload_Inline{Inline: big}}})

	cases := []struct {
		name         string
		afterWelcome bool
		messages     []*agentv1.ConnectRequest
	}{
		{"before-hello", false, []*agentv1.ConnectRequest{heartbeat}},
		{"empty-client-name", false, []*agentv1.ConnectRequest{hello(func(h *agentv1.Hello) { h.ClientName = "" })}},
		{"protocol-zero", false, []*agentv1.ConnectRequest{hello(func(h *agentv1.Hello) { h.ProtocolVersion = 0 })}},
		{"second-hello", true, []*agentv1.ConnectRequest{hello(nil), hello(nil)}},
		{"oversized", true, []*agentv1.ConnectRequest{hello(func(h *agentv1.Hello) { h.AgentId = client + "-oversized" }), oversized}},
	}
	for _, c := range cases {
		if err := streamCase(ctx, raw, c.name, c.afterWelcome, c.messages); err != nil {
			return err
		}
	}

	upload, err := raw.agent.UploadPayload(ctx)
	if err != nil {
		return err
	}
	header := &agentv1.UploadHeader{AgentId: "nobody-connected", SizeBytes: 4}
	_ = upload.Send(&agentv1.UploadPayloadRequest{Part: &agentv1.UploadPayloadRequest_Header{Header: header}})
	if _, err := upload.CloseAndRecv(); err != nil {
		statusLine("upload-without-stream", err)
	} else {
		return errors.New("the upload of an agent that is not connected succeeded")
	}

	download, err := raw.agent.DownloadPayload(ctx, &agentv1.DownloadPayloadRequest{PayloadId: "no-such-payload"})
	if err != nil {
		return err
	}
	for {
		if _, err := download.Recv(); errors.Is(err, io.EOF) {
			return errors.New("the download of an unknown payload succeeded")
		} else if err != nil {
			statusLine("unknown-payload", err)
			return nil
		}
	}
}

// streamCase opens a Connect stream, sends the first message (and waits for
// the welcome when asked), sends the rest, and prints how the stream ended.
func streamCase(ctx context.Context, raw *rawConnection, name string, afterWelcome bool, messages []*agentv1.ConnectRequest) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := raw.agent.Connect(ctx)
	if err != nil {
		return err
	}
	_ = stream.Send(messages[0])
	if afterWelcome {
		if _, err := nextOf(stream, (*agentv1.ConnectResponse).GetWelcome); err != nil {
			return fmt.Errorf("%s: no welcome: %w", name, err)
		}
	}
	for _, message := range messages[1:] {
		// A send fails once the site ended the stream; Recv below reads why.
		_ = stream.Send(message)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%s: the site closed the stream without an error", name)
			}
			statusLine(name, err)
			return nil
		}
	}
}

func statusLine(name string, err error) {
	s := status.Convert(err)
	emit("status", map[string]any{"case": name, "code": int(s.Code()), "message": s.Message()})
}
