package agent

import (
	"errors"
	"fmt"

	agentv1 "campfire.dev/clients/go/gen/campfire/agent/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrStopped is what NextTask and Submit return after Stop.
var ErrStopped = errors.New("the agent was stopped")

// AbortedError is the cause of a task's context when the site aborted the task.
type AbortedError struct {
	TaskID string
	Reason string
}

func (e *AbortedError) Error() string {
	return fmt.Sprintf("the site aborted task %s: %s", e.TaskID, e.Reason)
}

// ByeError ends the agent when the site says bye for good: the job it served
// ended (BYE_REASON_JOB_ENDED), or another stream with the same agent id
// replaced this one (BYE_REASON_REPLACED). A site that is shutting down says
// bye too, but then the agent reconnects.
type ByeError struct {
	Reason  agentv1.ByeReason
	Message string
}

func (e *ByeError) Error() string {
	return fmt.Sprintf("the site said bye (%s): %s", e.Reason, e.Message)
}

// RefusedError ends the agent when the site refused its stream for a reason
// that reconnecting would only repeat (a malformed or out-of-order message, a
// name or certificate it does not accept, an agent id of another client).
type RefusedError struct {
	Code    codes.Code
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the site refused the agent: %s: %s", e.Code, e.Message)
}

// GRPCStatus lets status.Code read the refusal's code.
func (e *RefusedError) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// permanentRefusals are the status codes after which the agent does not reconnect.
var permanentRefusals = map[codes.Code]bool{
	codes.InvalidArgument:    true,
	codes.FailedPrecondition: true,
	codes.AlreadyExists:      true,
	codes.ResourceExhausted:  true,
	codes.Unimplemented:      true,
	codes.Unauthenticated:    true,
	codes.PermissionDenied:   true,
}
