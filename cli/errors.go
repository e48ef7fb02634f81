package cli

import (
	"errors"
	"fmt"
	"strings"
)

// ExitError carries an exit code for a failure that has already been
// reported to the user (for example failed checks). Main prints nothing more.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// usageError marks bad flags or arguments; they exit 2 like other CLIs do.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitCode maps an error from a command to the process exit code and the one
// line to print (empty when the command already reported).
func exitCode(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	var exit *ExitError
	if errors.As(err, &exit) {
		return exit.Code, ""
	}
	line := "Error: " + oneLine(err.Error())
	var usage *usageError
	if errors.As(err, &usage) || isCobraUsage(err) {
		return 2, line
	}
	return 1, line
}

// oneLine keeps an error on a single line so a failure is one clear line
// even when a wrapped library error spans several.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "unknown command", "accepts ", "requires at least", "requires at most", "bad flag syntax"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
