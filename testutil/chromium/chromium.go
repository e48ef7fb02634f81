// Package chromium finds the browser that the dashboard's browser tests
// drive, with one policy for every package: scripts/deps.sh installs
// Debian's chromium for `make test`, so in CI (CI=true) a missing browser
// fails the test; elsewhere the test skips and says how to get it.
package chromium

import (
	"os/exec"
	"testing"

	"meshtls/testutil/needs"
)

// Path returns the chromium executable, or ends the test as above.
func Path(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	needs.Missing(t, "chromium is not installed (scripts/deps.sh installs Debian's chromium; make test runs it)")
	return ""
}
