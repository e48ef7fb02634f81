package kubelet

import (
	"context"
	"encoding/json"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ReasonImageNotMapped is the waiting reason of a container whose image has
// no local binary.
const ReasonImageNotMapped = "ImageNotMapped"

const hostIP = "127.0.0.1"

func (c *containerRun) status(pod *v1.Pod, waitingFor string) v1.ContainerStatus {
	cs := v1.ContainerStatus{
		Name:         c.spec.Name,
		Image:        c.spec.Image,
		ImageID:      "localkube://" + c.binary,
		RestartCount: c.restartCount,
		Ready:        c.running && c.ready && c.started,
	}
	if c.binary == "" {
		cs.ImageID = ""
	}
	started := c.running && c.started
	cs.Started = &started
	switch {
	case c.running:
		cs.ContainerID = containerID(c.pid)
		cs.State.Running = &v1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
	case c.term != nil:
		cs.ContainerID = c.term.ContainerID
		cs.State.Terminated = c.term.DeepCopy()
	default:
		reason, msg := c.waitReason, c.waitMessage
		if reason == "" {
			reason = waitingFor
		}
		cs.State.Waiting = &v1.ContainerStateWaiting{Reason: reason, Message: msg}
	}
	if c.lastTerm != nil {
		cs.LastTerminationState.Terminated = c.lastTerm.DeepCopy()
	}
	return cs
}

func (w *podWorker) computeStatus() v1.PodStatus {
	st := v1.PodStatus{
		HostIP:    hostIP,
		HostIPs:   []v1.HostIP{{IP: hostIP}},
		PodIP:     w.podIP.String(),
		PodIPs:    []v1.PodIP{{IP: w.podIP.String()}},
		StartTime: &w.startTime,
		QOSClass:  w.pod.Status.QOSClass,
	}
	initialized, initFailed := true, false
	for _, c := range w.inits {
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.status(w.pod, "PodInitializing"))
		if !c.done {
			initialized = false
			if c.term != nil && c.term.ExitCode != 0 {
				initFailed = true
			}
		}
	}
	waiting := "ContainerCreating"
	if !initialized {
		waiting = "PodInitializing"
	}
	allReady, running, succeeded, failed := true, 0, 0, 0
	for _, c := range w.containers {
		cs := c.status(w.pod, waiting)
		if w.volErr != nil && !w.volumesWritten && cs.State.Waiting != nil && cs.State.Waiting.Message == "" {
			cs.State.Waiting.Message = "waiting for volumes: " + w.volErr.Error()
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		if !cs.Ready {
			allReady = false
		}
		switch {
		case c.running:
			running++
		case c.term != nil && c.term.ExitCode == 0:
			succeeded++
		case c.term != nil:
			failed++
		}
	}
	n := len(w.containers)
	switch {
	case initFailed && w.pod.Spec.RestartPolicy == v1.RestartPolicyNever:
		st.Phase = v1.PodFailed
	case !initialized:
		st.Phase = v1.PodPending
	case succeeded+failed == n && n > 0 && failed == 0:
		st.Phase = v1.PodSucceeded
	case succeeded+failed == n && n > 0:
		st.Phase = v1.PodFailed
	case running > 0 || succeeded+failed > 0 || anyRestarted(w.containers):
		st.Phase = v1.PodRunning
	default:
		st.Phase = v1.PodPending
	}
	if n == 0 {
		allReady = false
	}
	ready := allReady
	for _, g := range w.pod.Spec.ReadinessGates {
		found := false
		for _, pc := range w.pod.Status.Conditions {
			if pc.Type == g.ConditionType && pc.Status == v1.ConditionTrue {
				found = true
			}
		}
		ready = ready && found
	}
	boolCond := func(b bool) v1.ConditionStatus {
		if b {
			return v1.ConditionTrue
		}
		return v1.ConditionFalse
	}
	sandbox := w.haveIP && w.volumesWritten
	conds := []struct {
		t      v1.PodConditionType
		s      bool
		reason string
	}{
		{v1.PodReadyToStartContainers, sandbox, ""},
		{v1.PodInitialized, initialized, "ContainersNotInitialized"},
		{v1.ContainersReady, allReady, "ContainersNotReady"},
		{v1.PodReady, ready, "ContainersNotReady"},
		{v1.PodScheduled, true, ""},
	}
	if st.Phase == v1.PodSucceeded {
		for i := range conds[2:4] {
			conds[2+i].reason = "PodCompleted"
		}
	}
	for _, c := range conds {
		status := boolCond(c.s)
		prev, ok := w.conditions[c.t]
		if !ok || prev.Status != status {
			prev = v1.PodCondition{Type: c.t, Status: status, LastTransitionTime: metav1.Now()}
			if !c.s {
				prev.Reason = c.reason
			}
			w.conditions[c.t] = prev
		}
		// Gates set by others live in the pod's conditions too; keep them.
		st.Conditions = append(st.Conditions, prev)
	}
	for _, pc := range w.pod.Status.Conditions {
		if _, ours := w.conditions[pc.Type]; !ours {
			st.Conditions = append(st.Conditions, pc)
		}
	}
	return st
}

func anyRestarted(cs []*containerRun) bool {
	for _, c := range cs {
		if c.gen > 0 {
			return true
		}
	}
	return false
}

// writeStatus sends the pod's status when it changed since the last write.
// A merge patch on the status subresource needs no resourceVersion, so it
// never conflicts with controllers updating the pod.
func (w *podWorker) writeStatus(ctx context.Context) {
	st := w.computeStatus()
	if w.lastSent != nil && apiequality.Semantic.DeepEqual(*w.lastSent, st) {
		return
	}
	body, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return
	}
	_, err = w.k.client.CoreV1().Pods(w.pod.Namespace).Patch(ctx, w.pod.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "localkube-kubelet"}, "status")
	if err != nil {
		if ctx.Err() == nil {
			w.k.log.Printf("pod %s/%s: status: %v", w.pod.Namespace, w.pod.Name, err)
		}
		w.lastSent = nil
		return
	}
	w.lastSent = &st
}
