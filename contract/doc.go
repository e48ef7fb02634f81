// Package contract holds the names every side of the mesh shares: the
// labels and annotations on meshed pods, the proxy's environment and ports,
// the workload identity format and the Secret and bundle layout
// (../shared/DESIGN.md, "Contracts").
//
// inject writes these names, the CA, the proxy, the destination service,
// stat and check read them. It imports nothing but the standard library, so
// the proxy can learn its own environment without importing inject.
package contract
