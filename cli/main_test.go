package cli

import (
	"os"
	"testing"

	"meshtls/testutil/testbin"
)

// TestMain lets the tests that run the linkerd binary (in tmux, or as a
// user starts the dashboard) share one build of it.
func TestMain(m *testing.M) { os.Exit(testbin.Main(m)) }
