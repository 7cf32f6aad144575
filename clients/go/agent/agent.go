// Package agent joins a Campfire site for one training process: it opens the
// AgentService.Connect stream (protocol 2), receives tasks, returns results
// (inline, or uploaded in chunks when large), heartbeats, obeys abort and bye,
// and reconnects with backoff, sending an unacknowledged result again.
//
//	a, _ := agent.New(agent.Options{Options: transport.Options{Site: "127.0.0.1:7443"}, ClientName: "hospital-a"})
//	go a.Run(ctx)
//	for {
//		task, err := a.NextTask(ctx) // a *ByeError when the job ended
//		if err != nil { break }
//		result, _ := train(task.Context(), task.Data) // task.Context() ends if the site aborts the task
//		a.Submit(ctx, task, commonv1.ReturnCode_RETURN_CODE_OK, result)
//	}
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mathrand "math/rand/v2"
	"sync"
	"time"

	agentv1 "campfire.dev/clients/go/gen/campfire/agent/v1"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
	"campfire.dev/clients/go/transport"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ProtocolVersion is the newest protocol this package speaks: version 2 reads
// acknowledgements riding inside the next task (Task.result_ack).
const ProtocolVersion = 2

// Options says which site to join and as whom.
type Options struct {
	transport.Options
	// ClientName is the client the agent acts for, as named in deploy maps. Required.
	ClientName string
	// AgentID identifies this process across reconnects; default ClientName-<random>.
	AgentID string
	// ProtocolVersion to offer in hello; default ProtocolVersion.
	ProtocolVersion uint32
	// Resources the agent offers, for jobs' resource_spec.
	Resources map[string]float64
	// TaskNames the agent runs; empty means any.
	TaskNames []string
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// connection attempts (full jitter); defaults 100 ms and 5 s.
	ReconnectMin, ReconnectMax time.Duration
	// Observe, when set, sees every message from the site, on the receiving
	// goroutine, before the agent acts on it. It must not block.
	Observe func(*agentv1.ConnectResponse)
	// Logger for connection events; default slog.Default().
	Logger *slog.Logger
}

// Task is a unit of work from the site.
type Task struct {
	ID, Name, JobID string
	// Data is the task's data, downloaded already when it came by reference.
	Data *commonv1.DataExchange
	// Deadline is when the site stops waiting for the result; zero when none.
	Deadline time.Time
	// Signature is the job's signature, for agents that verify jobs; nil for unsigned jobs.
	Signature *commonv1.JobSignature

	ctx    context.Context
	cancel context.CancelCauseFunc
}

// Context ends when the site aborts the task (context.Cause is then an
// *AbortedError) or when the agent ends (the cause is why, as Run returns it).
func (t *Task) Context() context.Context { return t.ctx }

// heldResult is a result the site has not acknowledged yet.
type heldResult struct {
	result *agentv1.TaskResult // Payload nil: filled per stream from data
	data   *commonv1.DataExchange
	acked  chan agentv1.ResultDisposition // buffered 1
}

// outbox is the current stream's send queue.
type outbox struct {
	messages chan *agentv1.ConnectRequest
	done     <-chan struct{}
	// inlineLimit is this stream's Welcome.max_inline_payload_bytes.
	inlineLimit int
}

// Agent is one agent process's session with a site.
type Agent struct {
	options Options
	logger  *slog.Logger
	control *grpc.ClientConn
	data    *grpc.ClientConn
	stub    agentv1.AgentServiceClient
	payload agentv1.AgentServiceClient
	tasks   chan *Task
	ended   chan struct{} // closed when Run returns
	endErr  error

	mu      sync.Mutex
	out     *outbox
	welcome *agentv1.Welcome
	held    *heldResult
	// current maps the ids of tasks handed to the trainer (or being fetched)
	// and not yet answered to their task.
	current map[string]*Task
	// answered remembers recently answered task ids, so that a task sent again
	// is acknowledged but not run twice.
	answered []string
	stop     context.CancelFunc
	stopping bool
}

// New makes an agent; Run joins the site.
func New(options Options) (*Agent, error) {
	if options.ClientName == "" {
		return nil, errors.New("agent: ClientName is required")
	}
	if options.AgentID == "" {
		suffix := make([]byte, 4)
		_, _ = rand.Read(suffix)
		options.AgentID = options.ClientName + "-" + hex.EncodeToString(suffix)
	}
	if options.ProtocolVersion == 0 {
		options.ProtocolVersion = ProtocolVersion
	}
	if options.ReconnectMin <= 0 {
		options.ReconnectMin = 100 * time.Millisecond
	}
	if options.ReconnectMax <= 0 {
		options.ReconnectMax = 5 * time.Second
	}
	logger := options.Logger
	if logger == nil {
		logger = slog.Default()
	}
	control, err := transport.Dial(options.Options)
	if err != nil {
		return nil, err
	}
	data, err := transport.Dial(options.Options)
	if err != nil {
		control.Close()
		return nil, err
	}
	return &Agent{
		options: options,
		logger:  logger.With("client", options.ClientName, "agent", options.AgentID),
		control: control,
		data:    data,
		stub:    agentv1.NewAgentServiceClient(control),
		payload: agentv1.NewAgentServiceClient(data),
		tasks:   make(chan *Task),
		ended:   make(chan struct{}),
		current: map[string]*Task{},
	}, nil
}

// ID is the agent id sent in hello.
func (a *Agent) ID() string { return a.options.AgentID }

// Welcome is the site's latest welcome, nil before the first.
func (a *Agent) Welcome() *agentv1.Welcome {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.welcome
}

// Run joins the site and serves it until ctx ends, Stop is called, the site
// says bye for good (*ByeError) or refuses the agent (*RefusedError); it
// reconnects after anything else. It returns why it ended and closes the
// agent's connections.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	a.mu.Lock()
	a.stop = cancel
	a.mu.Unlock()
	defer func() {
		cancel()
		a.mu.Lock()
		for _, task := range a.current {
			task.cancel(a.endErr) // the trainer stops: nobody would take its answer
		}
		a.mu.Unlock()
		a.control.Close()
		a.data.Close()
		close(a.ended)
	}()
	for attempt := 0; ; attempt++ {
		welcomed, err := a.session(ctx)
		var bye *ByeError
		var refused *RefusedError
		switch {
		case a.isStopping():
			a.endErr = ErrStopped
			return ErrStopped
		case ctx.Err() != nil:
			a.endErr = ctx.Err()
			return a.endErr
		case errors.As(err, &bye) || errors.As(err, &refused):
			a.endErr = err
			return err
		}
		if welcomed {
			attempt = 0
		}
		wait := backoff(attempt, a.options.ReconnectMin, a.options.ReconnectMax)
		a.logger.Info("reconnecting", "after", err, "wait", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			a.endErr = ctx.Err()
			return a.endErr
		}
	}
}

// backoff is the wait before attempt n: exponential from min, capped at max, full jitter.
func backoff(attempt int, minimum, maximum time.Duration) time.Duration {
	ceiling := minimum << min(attempt, 16)
	if ceiling > maximum || ceiling <= 0 {
		ceiling = maximum
	}
	return time.Duration(mathrand.Int64N(int64(ceiling)) + 1)
}

// NextTask waits for the next task. It fails with the reason the agent ended
// (a *ByeError when the job ended) or with ctx's error.
func (a *Agent) NextTask(ctx context.Context) (*Task, error) {
	select {
	case task := <-a.tasks:
		return task, nil
	case <-a.ended:
		return nil, a.endErr
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Submit returns a task's result and waits until the site acknowledges it,
// across reconnects, and returns what the site did with it. A task the site
// aborted is not answered: Submit then returns its *AbortedError at once.
// When ctx ends first, the result is still sent again after a reconnect until
// the site acknowledges it.
func (a *Agent) Submit(ctx context.Context, task *Task, code commonv1.ReturnCode, data *commonv1.DataExchange) (agentv1.ResultDisposition, error) {
	if cause := context.Cause(task.ctx); cause != nil {
		return agentv1.ResultDisposition_RESULT_DISPOSITION_UNSPECIFIED, cause
	}
	held := &heldResult{
		result: &agentv1.TaskResult{TaskId: task.ID, ReturnCode: code},
		data:   data,
		acked:  make(chan agentv1.ResultDisposition, 1),
	}
	a.mu.Lock()
	delete(a.current, task.ID)
	a.remember(task.ID)
	a.held = held
	out := a.out
	a.mu.Unlock()
	if out != nil {
		a.sendHeld(ctx, out, held)
	}
	select {
	case disposition := <-held.acked:
		return disposition, nil
	case <-a.ended:
		return agentv1.ResultDisposition_RESULT_DISPOSITION_UNSPECIFIED, a.endErr
	case <-ctx.Done():
		return agentv1.ResultDisposition_RESULT_DISPOSITION_UNSPECIFIED, ctx.Err()
	}
}

// Send puts a message on the current stream (for metrics); false when the
// agent is not connected.
func (a *Agent) Send(message *agentv1.ConnectRequest) bool {
	a.mu.Lock()
	out := a.out
	a.mu.Unlock()
	return out != nil && out.send(message)
}

// Stop says bye to the site (BYE_REASON_AGENT_STOPPING) and ends Run.
func (a *Agent) Stop() {
	a.mu.Lock()
	a.stopping = true
	out, stop := a.out, a.stop
	a.mu.Unlock()
	if out != nil {
		out.send(&agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_Bye{Bye: &agentv1.Bye{Reason: agentv1.ByeReason_BYE_REASON_AGENT_STOPPING, Message: "the agent is stopping"}}})
		// The bye leaves before the stream is cut: the sender drains its queue
		// in order, and a short grace lets it reach the site.
		select {
		case <-out.done:
		case <-time.After(500 * time.Millisecond):
		}
	}
	if stop != nil {
		stop()
	}
}

func (a *Agent) isStopping() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stopping
}

func (o *outbox) send(message *agentv1.ConnectRequest) bool {
	select {
	case o.messages <- message:
		return true
	case <-o.done:
		return false
	}
}

// session runs one stream from hello to its end; welcomed says whether the
// site accepted it.
func (a *Agent) session(parent context.Context) (welcomed bool, err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	stream, err := a.stub.Connect(ctx)
	if err != nil {
		return false, err
	}
	hello := &agentv1.Hello{
		ClientName:      a.options.ClientName,
		AgentId:         a.options.AgentID,
		ProtocolVersion: a.options.ProtocolVersion,
		Resources:       a.options.Resources,
		TaskNames:       a.options.TaskNames,
	}
	if err := stream.Send(&agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return false, streamError(stream.Recv, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, classify(err)
	}
	a.observe(first)
	welcome := first.GetWelcome()
	if welcome == nil {
		return false, fmt.Errorf("the site answered hello with %T, not a welcome", first.GetKind())
	}
	inlineLimit := DefaultInlineLimit
	if welcome.GetMaxInlinePayloadBytes() > 0 {
		inlineLimit = int(welcome.GetMaxInlinePayloadBytes())
	}
	out := &outbox{messages: make(chan *agentv1.ConnectRequest, 16), done: ctx.Done(), inlineLimit: inlineLimit}
	a.mu.Lock()
	a.welcome = welcome
	a.out = out
	held := a.held
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.out = nil
		a.mu.Unlock()
	}()
	a.logger.Info("welcomed", "site", welcome.GetSiteName(), "protocol", welcome.GetProtocolVersion())

	lastSeen := make(chan struct{}, 1)
	go a.sendLoop(ctx, cancel, stream, out, welcome.GetHeartbeatInterval().AsDuration())
	go watchLiveness(ctx, cancel, lastSeen, welcome.GetHeartbeatTimeout().AsDuration())
	if held != nil {
		go a.sendHeld(ctx, out, held)
	}
	for {
		message, err := stream.Recv()
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return true, cause
			}
			return true, classify(err)
		}
		select {
		case lastSeen <- struct{}{}:
		default:
		}
		a.observe(message)
		if err := a.receive(ctx, out, message); err != nil {
			return true, err
		}
	}
}

func (a *Agent) observe(message *agentv1.ConnectResponse) {
	if a.options.Observe != nil {
		a.options.Observe(message)
	}
}

// sendLoop writes the outbox to the stream in order, and a heartbeat whenever
// nothing was sent for an interval.
func (a *Agent) sendLoop(ctx context.Context, cancel context.CancelCauseFunc, stream agentv1.AgentService_ConnectClient, out *outbox, interval time.Duration) {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	var sequence uint64
	for {
		var message *agentv1.ConnectRequest
		select {
		case <-ctx.Done():
			return
		case message = <-out.messages:
		case <-timer.C:
			sequence++
			message = &agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_Heartbeat{Heartbeat: &agentv1.Heartbeat{Sequence: sequence, SentAt: timestamppb.Now()}}}
		}
		if err := stream.Send(message); err != nil {
			cancel(fmt.Errorf("sending on the stream: %w", err))
			return
		}
		if message.GetBye() != nil {
			_ = stream.CloseSend()
			cancel(nil)
			return
		}
		timer.Reset(interval)
	}
}

// watchLiveness ends the stream when the site is silent past its heartbeat timeout.
func watchLiveness(ctx context.Context, cancel context.CancelCauseFunc, seen <-chan struct{}, timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-seen:
			timer.Reset(timeout)
		case <-timer.C:
			cancel(fmt.Errorf("no sign of life from the site for %s", timeout))
			return
		}
	}
}

// receive acts on one message from the site; an error ends the stream.
func (a *Agent) receive(ctx context.Context, out *outbox, message *agentv1.ConnectResponse) error {
	switch kind := message.GetKind().(type) {
	case *agentv1.ConnectResponse_ResultAck:
		a.acknowledged(kind.ResultAck)
	case *agentv1.ConnectResponse_Task:
		if kind.Task.GetResultAck() != nil {
			a.acknowledged(kind.Task.GetResultAck())
		}
		a.taskArrived(ctx, out, kind.Task)
	case *agentv1.ConnectResponse_Abort:
		a.mu.Lock()
		task := a.current[kind.Abort.GetTaskId()]
		delete(a.current, kind.Abort.GetTaskId())
		a.mu.Unlock()
		if task != nil {
			task.cancel(&AbortedError{TaskID: task.ID, Reason: kind.Abort.GetReason()})
		}
		a.logger.Info("task aborted", "task", kind.Abort.GetTaskId(), "reason", kind.Abort.GetReason())
	case *agentv1.ConnectResponse_Bye:
		if kind.Bye.GetReason() == agentv1.ByeReason_BYE_REASON_SITE_SHUTTING_DOWN {
			return fmt.Errorf("the site is shutting down (%s): reconnecting", kind.Bye.GetMessage())
		}
		return &ByeError{Reason: kind.Bye.GetReason(), Message: kind.Bye.GetMessage()}
	}
	return nil
}

// taskArrived acknowledges a task and hands it to the trainer, unless it is
// a task the agent already holds or answered (sent again after a reconnect).
func (a *Agent) taskArrived(ctx context.Context, out *outbox, message *agentv1.Task) {
	id := message.GetTaskId()
	ack := &agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_TaskAck{TaskAck: &agentv1.TaskAck{TaskId: id}}}
	a.mu.Lock()
	_, held := a.current[id]
	known := held || a.wasAnswered(id)
	var task *Task
	if !known {
		taskCtx, cancel := context.WithCancelCause(context.Background())
		task = &Task{ID: id, Name: message.GetTaskName(), JobID: message.GetJobId(), Signature: message.GetJobSignature(), ctx: taskCtx, cancel: cancel}
		if message.GetDeadline() != nil {
			task.Deadline = message.GetDeadline().AsTime()
		}
		a.current[id] = task
	}
	a.mu.Unlock()
	if a.wasAnsweredPending(id) {
		return // the held result, sent again on this stream, acknowledges it
	}
	out.send(ack)
	if known {
		return
	}
	go a.deliver(ctx, task, message.GetPayload())
}

// deliver fetches a task's data (downloading it when referenced) and hands
// the task to the trainer.
func (a *Agent) deliver(ctx context.Context, task *Task, payload *agentv1.Payload) {
	switch body := payload.GetBody().(type) {
	case *agentv1.Payload_Inline:
		task.Data = body.Inline
	case *agentv1.Payload_Ref:
		data, err := Download(ctx, a.payload, body.Ref)
		if err != nil {
			// The site sends the task again after the next reconnect.
			a.logger.Warn("task data download failed", "task", task.ID, "error", err)
			a.mu.Lock()
			delete(a.current, task.ID)
			a.mu.Unlock()
			return
		}
		task.Data = data
	default:
		task.Data = &commonv1.DataExchange{}
	}
	select {
	case a.tasks <- task:
	case <-a.ended:
	case <-task.ctx.Done():
	}
}

// sendHeld sends the held result on this stream, uploading its data first when large.
func (a *Agent) sendHeld(ctx context.Context, out *outbox, held *heldResult) {
	payload, err := payloadOf(ctx, a.payload, a.options.AgentID, held.data, out.inlineLimit)
	if err != nil {
		// Sent again after the next reconnect.
		a.logger.Warn("result upload failed", "task", held.result.GetTaskId(), "error", err)
		return
	}
	result := &agentv1.TaskResult{TaskId: held.result.GetTaskId(), ReturnCode: held.result.GetReturnCode(), Message: held.result.GetMessage(), Payload: payload}
	out.send(&agentv1.ConnectRequest{Kind: &agentv1.ConnectRequest_Result{Result: result}})
}

// acknowledged settles the held result the acknowledgement names.
func (a *Agent) acknowledged(ack *agentv1.ResultAck) {
	a.mu.Lock()
	held := a.held
	if held == nil || held.result.GetTaskId() != ack.GetTaskId() {
		a.mu.Unlock()
		return
	}
	a.held = nil
	a.mu.Unlock()
	held.acked <- ack.GetDisposition()
}

// remember records an answered task id (the last 64). Callers hold mu.
func (a *Agent) remember(id string) {
	a.answered = append(a.answered, id)
	if len(a.answered) > 64 {
		a.answered = a.answered[1:]
	}
}

// wasAnswered tells whether the task was answered recently. Callers hold mu.
func (a *Agent) wasAnswered(id string) bool {
	for _, answered := range a.answered {
		if answered == id {
			return true
		}
	}
	return false
}

// wasAnsweredPending tells whether the held (unacknowledged) result answers the task.
func (a *Agent) wasAnsweredPending(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held != nil && a.held.result.GetTaskId() == id
}

// classify turns a stream's end into a *RefusedError when reconnecting would not help.
func classify(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("the site closed the stream")
	}
	if s, ok := status.FromError(err); ok && permanentRefusals[s.Code()] {
		return &RefusedError{Code: s.Code(), Message: s.Message()}
	}
	return err
}

// streamError returns the stream's status when a send failed because the
// stream had ended (Send reports only io.EOF then).
func streamError(recv func() (*agentv1.ConnectResponse, error), err error) error {
	if errors.Is(err, io.EOF) {
		if _, recvErr := recv(); recvErr != nil {
			return classify(recvErr)
		}
	}
	return err
}
