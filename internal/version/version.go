// Package version holds the build's version, the one string that the
// images, their binaries and `linkerd install` share. make sets it with
// -ldflags "-X meshtls/internal/version.Version=…" (the Makefile's
// VERSION), next to meshtls/cli.Version; a plain `go build` leaves "dev".
package version

// Version is "vX.Y.Z" for a clean tagged tree, "dev-…" otherwise (see the
// Makefile's VERSION), or "dev" when nothing set it.
var Version = "dev"
