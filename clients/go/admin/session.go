// Package admin is a small client of a Campfire site's admin SessionService:
// submit a job folder, list, meta, monitor, download, abort, delete, clone.
// Callers authenticate with a bearer token, or with an admin's TLS kit.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	adminv1 "campfire.dev/clients/go/gen/campfire/admin/v1"
	"campfire.dev/clients/go/transport"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Options says how to reach the site and who the caller is.
type Options struct {
	transport.Options
	// Token is sent as "authorization: Bearer <token>" on every call.
	Token string
	// CallTimeout bounds each call that is not a stream when the context has
	// no deadline of its own. Default 30 s.
	CallTimeout time.Duration
}

// Session is a connection to one site's SessionService. Safe for concurrent use.
type Session struct {
	connection  *grpc.ClientConn
	client      adminv1.SessionServiceClient
	token       string
	callTimeout time.Duration
}

// Dial opens a session (the connection is made by the first call).
func Dial(options Options) (*Session, error) {
	connection, err := transport.Dial(options.Options)
	if err != nil {
		return nil, err
	}
	timeout := options.CallTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &Session{connection: connection, client: adminv1.NewSessionServiceClient(connection), token: options.Token, callTimeout: timeout}, nil
}

// Close closes the connection; calls in flight fail.
func (s *Session) Close() error { return s.connection.Close() }

// Client is the generated stub on the session's connection, for calls this
// package does not wrap. Add the token with Context.
func (s *Session) Client() adminv1.SessionServiceClient { return s.client }

// Context adds the session's token to ctx.
func (s *Session) Context(ctx context.Context) context.Context {
	if s.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.token)
}

func (s *Session) unary(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx = s.Context(ctx)
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.callTimeout)
}

// SubmitFolder reads a job folder (see ReadJobFolder) and submits it. Returns the job's id.
func (s *Session) SubmitFolder(ctx context.Context, folder string) (string, error) {
	definition, err := ReadJobFolder(folder)
	if err != nil {
		return "", err
	}
	return s.Submit(ctx, definition)
}

// Submit submits a job definition. Returns the job's id.
func (s *Session) Submit(ctx context.Context, definition *adminv1.JobDefinition) (string, error) {
	ctx, cancel := s.unary(ctx)
	defer cancel()
	response, err := s.client.SubmitJob(ctx, &adminv1.SubmitJobRequest{Definition: definition})
	if err != nil {
		return "", callError("SubmitJob", err)
	}
	return response.GetJobId(), nil
}

// Clone submits a new job with the definition of job id. Returns the new job's id.
func (s *Session) Clone(ctx context.Context, id string) (string, error) {
	ctx, cancel := s.unary(ctx)
	defer cancel()
	response, err := s.client.CloneJob(ctx, &adminv1.CloneJobRequest{JobId: id})
	if err != nil {
		return "", callError("CloneJob", err)
	}
	return response.GetJobId(), nil
}

// Meta returns a job's meta.
func (s *Session) Meta(ctx context.Context, id string) (*adminv1.JobMeta, error) {
	ctx, cancel := s.unary(ctx)
	defer cancel()
	response, err := s.client.GetJobMeta(ctx, &adminv1.GetJobMetaRequest{JobId: id})
	if err != nil {
		return nil, callError("GetJobMeta", err)
	}
	return response.GetMeta(), nil
}

// List lists jobs; a nil filter lists the caller's jobs, oldest first.
func (s *Session) List(ctx context.Context, filter *adminv1.ListJobsRequest) ([]*adminv1.JobMeta, error) {
	if filter == nil {
		filter = &adminv1.ListJobsRequest{}
	}
	ctx, cancel := s.unary(ctx)
	defer cancel()
	response, err := s.client.ListJobs(ctx, filter)
	if err != nil {
		return nil, callError("ListJobs", err)
	}
	return response.GetJobs(), nil
}

// Abort aborts a job and returns its status after the call.
func (s *Session) Abort(ctx context.Context, id, reason string) (adminv1.RunStatus, error) {
	ctx, cancel := s.unary(ctx)
	defer cancel()
	response, err := s.client.AbortJob(ctx, &adminv1.AbortJobRequest{JobId: id, Reason: reason})
	if err != nil {
		return adminv1.RunStatus_RUN_STATUS_UNSPECIFIED, callError("AbortJob", err)
	}
	return response.GetStatus(), nil
}

// Delete deletes a finished job and its workspace.
func (s *Session) Delete(ctx context.Context, id string) error {
	ctx, cancel := s.unary(ctx)
	defer cancel()
	_, err := s.client.DeleteJob(ctx, &adminv1.DeleteJobRequest{JobId: id})
	return callError("DeleteJob", err)
}

// SystemInfo describes the site, its connected clients and its running jobs.
func (s *Session) SystemInfo(ctx context.Context) (*adminv1.GetSystemInfoResponse, error) {
	ctx, cancel := s.unary(ctx)
	defer cancel()
	response, err := s.client.GetSystemInfo(ctx, &adminv1.GetSystemInfoRequest{})
	return response, callError("GetSystemInfo", err)
}

// Monitor yields a job's changes (first its state now) until it finishes,
// timeout passes (zero: never) or ctx ends; the last update carries the
// return code. Breaking out of the loop ends the stream. A failure is yielded
// once, as the error, and ends the sequence.
func (s *Session) Monitor(ctx context.Context, id string, timeout time.Duration) iter.Seq2[*adminv1.MonitorJobResponse, error] {
	return func(yield func(*adminv1.MonitorJobResponse, error) bool) {
		ctx, cancel := context.WithCancel(s.Context(ctx))
		defer cancel()
		request := &adminv1.MonitorJobRequest{JobId: id}
		if timeout > 0 {
			request.Timeout = durationpb.New(timeout)
		}
		stream, err := s.client.MonitorJob(ctx, request)
		if err != nil {
			yield(nil, callError("MonitorJob", err))
			return
		}
		for {
			update, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, callError("MonitorJob", err))
				return
			}
			if !yield(update, nil) || update.GetReturnCode() != adminv1.MonitorReturnCode_MONITOR_RETURN_CODE_UNSPECIFIED {
				return
			}
		}
	}
}

// Download writes a finished job's result into dir, each file as its chunks
// arrive, and returns the files' paths relative to dir ('/' separated). The
// site's paths and sizes are checked: nothing is written outside dir, and a
// file that does not add up to its announced size fails the download.
func (s *Session) Download(ctx context.Context, id, dir string) ([]string, error) {
	ctx, cancel := context.WithCancel(s.Context(ctx))
	defer cancel()
	stream, err := s.client.DownloadJobResult(ctx, &adminv1.DownloadJobResultRequest{JobId: id})
	if err != nil {
		return nil, callError("DownloadJobResult", err)
	}
	var files []string
	var current *resultFile
	defer func() { current.discard() }()
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, callError("DownloadJobResult", err)
		}
		if current == nil || chunk.GetPath() != current.path {
			if err := current.finish(); err != nil {
				return nil, err
			}
			if current, err = createResultFile(dir, chunk.GetPath(), chunk.GetFileSize()); err != nil {
				return nil, err
			}
			files = append(files, current.path)
		}
		if err := current.write(chunk.GetOffset(), chunk.GetChunk()); err != nil {
			return nil, err
		}
	}
	if err := current.finish(); err != nil {
		return nil, err
	}
	current = nil
	return files, nil
}

// resultFile is one file of a download being written.
type resultFile struct {
	path    string
	size    uint64
	written uint64
	file    *os.File
}

func createResultFile(dir, name string, size uint64) (*resultFile, error) {
	clean := path.Clean(name)
	if name == "" || path.IsAbs(name) || clean == ".." || strings.HasPrefix(clean, "../") || clean != name {
		return nil, fmt.Errorf("DownloadJobResult: the site sent a file path %q that is not a plain relative path", name)
	}
	target := filepath.Join(dir, filepath.FromSlash(clean))
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return nil, err
	}
	file, err := os.Create(target)
	if err != nil {
		return nil, err
	}
	return &resultFile{path: clean, size: size, file: file}, nil
}

func (f *resultFile) write(offset uint64, chunk []byte) error {
	if offset != f.written || f.written+uint64(len(chunk)) > f.size {
		return fmt.Errorf("DownloadJobResult: %s: a chunk at offset %d of %d bytes does not follow the %d bytes written of %d", f.path, offset, len(chunk), f.written, f.size)
	}
	if _, err := f.file.Write(chunk); err != nil {
		return err
	}
	f.written += uint64(len(chunk))
	return nil
}

func (f *resultFile) finish() error {
	if f == nil {
		return nil
	}
	err := f.file.Close()
	if err == nil && f.written != f.size {
		err = fmt.Errorf("DownloadJobResult: %s ended after %d of %d bytes", f.path, f.written, f.size)
	}
	f.file = nil
	return err
}

// discard closes a file a failed download left open.
func (f *resultFile) discard() {
	if f != nil && f.file != nil {
		f.file.Close()
	}
}
