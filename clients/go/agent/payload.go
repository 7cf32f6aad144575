package agent

import (
	"context"
	"errors"
	"fmt"
	"io"

	agentv1 "campfire.dev/clients/go/gen/campfire/agent/v1"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
	"google.golang.org/protobuf/proto"
)

// The data plane: payloads too large for the control stream travel in
// chunks on UploadPayload / DownloadPayload, on a connection of their own so
// that heartbeats never wait behind a model.
const (
	// ChunkBytes is the size of an upload chunk (the site accepts at most 1 MiB).
	ChunkBytes = 1 << 20
	// DefaultInlineLimit applies until the welcome names the site's
	// (Welcome.max_inline_payload_bytes): larger results are uploaded.
	DefaultInlineLimit = 512 << 10
	// MaxPayloadBytes bounds a downloaded payload whatever its reference says.
	MaxPayloadBytes = 8 << 30
)

// Download fetches the payload a task references and decodes it.
func Download(ctx context.Context, client agentv1.AgentServiceClient, ref *agentv1.PayloadRef) (*commonv1.DataExchange, error) {
	if ref.GetSizeBytes() > MaxPayloadBytes {
		return nil, fmt.Errorf("payload %s: %d bytes is over this agent's limit of %d", ref.GetPayloadId(), ref.GetSizeBytes(), uint64(MaxPayloadBytes))
	}
	stream, err := client.DownloadPayload(ctx, &agentv1.DownloadPayloadRequest{PayloadId: ref.GetPayloadId()})
	if err != nil {
		return nil, err
	}
	// The announced size is checked as chunks arrive, not trusted with one allocation.
	encoded := make([]byte, 0, min(ref.GetSizeBytes(), 64<<20))
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("downloading payload %s: %w", ref.GetPayloadId(), err)
		}
		if uint64(len(encoded)+len(response.GetChunk())) > ref.GetSizeBytes() {
			return nil, fmt.Errorf("payload %s: the site sent more than the %d bytes its reference announced", ref.GetPayloadId(), ref.GetSizeBytes())
		}
		encoded = append(encoded, response.GetChunk()...)
	}
	if uint64(len(encoded)) != ref.GetSizeBytes() {
		return nil, fmt.Errorf("payload %s: %d bytes arrived, its reference announced %d", ref.GetPayloadId(), len(encoded), ref.GetSizeBytes())
	}
	data := &commonv1.DataExchange{}
	if err := proto.Unmarshal(encoded, data); err != nil {
		return nil, fmt.Errorf("payload %s: %w", ref.GetPayloadId(), err)
	}
	return data, nil
}

// Upload sends an encoded DataExchange in chunks (header first) and returns
// the reference a result carries. The agent must be connected: the site keeps
// the payload until the result that references it is consumed or the agent
// disconnects.
func Upload(ctx context.Context, client agentv1.AgentServiceClient, agentID string, encoded []byte) (*agentv1.PayloadRef, error) {
	stream, err := client.UploadPayload(ctx)
	if err != nil {
		return nil, err
	}
	header := &agentv1.UploadPayloadRequest{Part: &agentv1.UploadPayloadRequest_Header{Header: &agentv1.UploadHeader{AgentId: agentID, SizeBytes: uint64(len(encoded))}}}
	if err := stream.Send(header); err != nil {
		return nil, uploadError(stream.CloseAndRecv, err)
	}
	for start := 0; start < len(encoded); start += ChunkBytes {
		chunk := encoded[start:min(start+ChunkBytes, len(encoded))]
		if err := stream.Send(&agentv1.UploadPayloadRequest{Part: &agentv1.UploadPayloadRequest_Chunk{Chunk: chunk}}); err != nil {
			return nil, uploadError(stream.CloseAndRecv, err)
		}
	}
	response, err := stream.CloseAndRecv()
	if err != nil {
		return nil, fmt.Errorf("uploading a payload: %w", err)
	}
	return &agentv1.PayloadRef{PayloadId: response.GetPayloadId(), SizeBytes: uint64(len(encoded))}, nil
}

// uploadError returns the site's status when a send failed because the site
// ended the upload (Send reports only io.EOF then).
func uploadError(closeAndRecv func() (*agentv1.UploadPayloadResponse, error), err error) error {
	if errors.Is(err, io.EOF) {
		if _, status := closeAndRecv(); status != nil {
			err = status
		}
	}
	return fmt.Errorf("uploading a payload: %w", err)
}

// payloadOf puts data inline when its encoding is at most inlineLimit bytes,
// else uploads it and references it.
func payloadOf(ctx context.Context, client agentv1.AgentServiceClient, agentID string, data *commonv1.DataExchange, inlineLimit int) (*agentv1.Payload, error) {
	if data == nil {
		return nil, nil
	}
	if proto.Size(data) <= inlineLimit {
		return &agentv1.Payload{Body: &agentv1.Payload_Inline{Inline: data}}, nil
	}
	encoded, err := proto.Marshal(data)
	if err != nil {
		return nil, err
	}
	ref, err := Upload(ctx, client, agentID, encoded)
	if err != nil {
		return nil, err
	}
	return &agentv1.Payload{Body: &agentv1.Payload_Ref{Ref: ref}}, nil
}
