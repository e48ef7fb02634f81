package controlplane

import "syscall"

const (
	sigterm = syscall.SIGTERM
	sigkill = syscall.SIGKILL
)
