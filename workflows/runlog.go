package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
)

// RunLogMessage is the message of the one line each finished run logs.
const RunLogMessage = "sync run finished"

// logRun writes a finished run's one summary line: the integration, the
// result, the counts of each step and the items not written by kind. The
// workflow logger adds the workflow and run ids, and writes nothing while
// a run is replayed, so a run logs it once. No address is in it: counts,
// the phase and the error's type only (the message may quote a vendor's
// answer; the run's result in Temporal has it).
func logRun(logger log.Logger, id string, st *RunState, now time.Time, err error) {
	c := st.Counts
	kv := []any{
		"integration", id,
		"result", "completed",
		"marketingToCRM", c.MarketingToCRM,
		"crmToMarketing", c.CRMToMarketing,
		"fieldSync", c.FieldSync,
		"failedTransient", c.MarketingToCRM.Failed + c.CRMToMarketing.Failed + c.FieldSync.Failed,
		"failedFinal", c.MarketingToCRM.Refused + c.CRMToMarketing.Refused + c.FieldSync.Refused,
		"complianceHeld", c.MarketingToCRM.ComplianceHeld + c.CRMToMarketing.ComplianceHeld + c.FieldSync.ComplianceHeld,
		"continuedAsNew", st.Continued,
		"seconds", now.Sub(st.StartedAt).Seconds(),
		"propagationAgeSeconds", ageSeconds(st.OldestPending, now),
	}
	if err == nil {
		logger.Info(RunLogMessage, kv...)
		return
	}
	kv[3] = "failed"
	logger.Error(RunLogMessage, append(kv, "phase", st.Phase, "errorType", errorType(err))...)
}

// errorType names what failed a run without its message.
func errorType(err error) string {
	var (
		app      *temporal.ApplicationError
		timeout  *temporal.TimeoutError
		canceled *temporal.CanceledError
	)
	switch {
	case errors.As(err, &app):
		return app.Type()
	case errors.As(err, &timeout):
		return "Timeout"
	case errors.As(err, &canceled):
		return "Canceled"
	}
	return "Error"
}
