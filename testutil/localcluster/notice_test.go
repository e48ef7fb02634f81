//go:build !integration

package localcluster

import "testing"

// A plain `go test ./...` builds the unit tests only; this says, once,
// where the others are.
func TestClusterTestsNeedTheIntegrationTag(t *testing.T) {
	t.Skip("the tests that need a local cluster or root are built with -tags integration: " +
		"`make test` runs them with the unit tests; by hand, as root: " +
		"make build localkube prometheus && MESHTLS_BIN=$PWD/bin go test -tags integration ./...")
}
