package admin

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a call the site refused or that failed on the way, with the gRPC
// status code and the site's message (which names the field, job or right).
// status.Code(err) reads its code.
type Error struct {
	// Method is the SessionService method, for example "SubmitJob".
	Method string
	// Code is the gRPC status code: NOT_FOUND for an unknown job,
	// FAILED_PRECONDITION for a job in the wrong state, INVALID_ARGUMENT for a
	// bad definition, UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE, ...
	Code codes.Code
	// Message is the site's explanation.
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Method, e.Code, e.Message)
}

// GRPCStatus lets status.FromError and status.Code see the code.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

func callError(method string, err error) error {
	if err == nil {
		return nil
	}
	s := status.Convert(err)
	return &Error{Method: method, Code: s.Code(), Message: s.Message()}
}
