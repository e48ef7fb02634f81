// Package needs is the one policy for a test whose tool is missing (a
// browser, a binary `make` builds): `make test` installs and builds them
// all, so in CI (CI=true) a missing tool fails the test; elsewhere, a
// plain `go test ./...` on a fresh clone say, the test skips saying how
// to get it.
package needs

import (
	"os"
	"testing"
)

// Missing ends the test: a failure in CI, else a skip with why.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip("skipped, " + why)
}
