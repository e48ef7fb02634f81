package kubelet

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	v1 "k8s.io/api/core/v1"
)

// runAs applies the container's (else the pod's) runAsUser and runAsGroup
// to cmd, as a container runtime would. Without runAsUser the process runs
// as localkube's own user (root), like an image without USER. With it,
// the process gets that uid, the runAsGroup (default 0, as for an image
// without a group), and the pod's supplementalGroups and fsGroup.
func runAs(cmd *exec.Cmd, pod *v1.Pod, c *v1.Container) error {
	var uid, gid *int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	if uid == nil {
		return nil
	}
	if *uid < 0 || *uid > 1<<31 {
		return fmt.Errorf("runAsUser %d is not a valid uid", *uid)
	}
	cred := &syscall.Credential{Uid: uint32(*uid)}
	if gid != nil {
		cred.Gid = uint32(*gid)
	}
	if psc := pod.Spec.SecurityContext; psc != nil {
		for _, g := range psc.SupplementalGroups {
			cred.Groups = append(cred.Groups, uint32(g))
		}
		if psc.FSGroup != nil {
			cred.Groups = append(cred.Groups, uint32(*psc.FSGroup))
		}
	}
	cmd.SysProcAttr.Credential = cred
	// The binary may sit in a dir that only root can search (a test's
	// 0700 temp dir). Exec it through an fd opened as root, as fexecve
	// does: the kernel then checks only the file's own x bit.
	f, err := os.Open(cmd.Path)
	if err != nil {
		return err
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	cmd.Path = fmt.Sprintf("/proc/self/fd/%d", 2+len(cmd.ExtraFiles))
	return nil
}

// closeExtra closes the parent's copies of the fds runAs passed.
func closeExtra(cmd *exec.Cmd) {
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
}
