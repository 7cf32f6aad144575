package agent

import (
	"context"
	"errors"

	agentv1 "campfire.dev/clients/go/gen/campfire/agent/v1"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
)

// Handler runs one task and returns its outcome. It should watch
// task.Context(): when the site aborts the task, its answer is dropped.
type Handler func(task *Task) (commonv1.ReturnCode, *commonv1.DataExchange)

// Serve is a trainer process's loop: it runs the agent and answers each task
// with handle until the agent ends, and returns why, as Run does. When ctx
// ends the agent says bye and stops (ErrStopped). settled, when set, sees
// what became of each answer: the site's disposition, or the error (an
// *AbortedError for a task the site aborted).
func (a *Agent) Serve(ctx context.Context, handle Handler, settled func(*Task, agentv1.ResultDisposition, error)) error {
	ended := make(chan error, 1)
	go func() { ended <- a.Run(context.Background()) }()
	go func() {
		select {
		case <-ctx.Done():
			a.Stop()
		case <-a.ended:
		}
	}()
	for {
		task, err := a.NextTask(context.Background())
		if err != nil {
			return <-ended
		}
		code, data := handle(task)
		disposition, err := a.Submit(context.Background(), task, code, data)
		if settled != nil {
			settled(task, disposition, err)
		}
	}
}

// EndedNormally tells whether Serve's or Run's error is an expected end: the
// site's bye at the job's end, or Stop.
func EndedNormally(err error) bool {
	var bye *ByeError
	return errors.Is(err, ErrStopped) || (errors.As(err, &bye) && bye.Reason == agentv1.ByeReason_BYE_REASON_JOB_ENDED)
}
