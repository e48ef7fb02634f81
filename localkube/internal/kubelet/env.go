package kubelet

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// Environment variables localkube gives every container on top of its spec.
const (
	// EnvPodLocalhost is the pod's localhost. Each pod has a network
	// namespace of its own, so it is always 127.0.0.1; kept for binaries
	// written for the earlier shared-namespace model.
	EnvPodLocalhost = "LOCALKUBE_POD_LOCALHOST"
	// EnvPodIP is the pod IP, also available through the downward API.
	EnvPodIP = "LOCALKUBE_POD_IP"
	// EnvPodDir is the pod's directory on the host (volumes, logs).
	EnvPodDir = "LOCALKUBE_POD_DIR"
)

// saMountPath is where Kubernetes mounts the ServiceAccount token volume.
const saMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// podField resolves a downward-API field path.
func podField(pod *v1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		ips := make([]string, 0, len(pod.Status.PodIPs))
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.hostIPs":
		return pod.Status.HostIP, nil
	}
	for _, p := range []struct {
		prefix string
		m      map[string]string
	}{{"metadata.labels['", pod.Labels}, {"metadata.annotations['", pod.Annotations}} {
		if strings.HasPrefix(path, p.prefix) && strings.HasSuffix(path, "']") {
			return p.m[strings.TrimSuffix(strings.TrimPrefix(path, p.prefix), "']")], nil
		}
	}
	return "", fmt.Errorf("downward API field %q is not supported by localkube", path)
}

// mountRewriter maps container paths under a volume's mountPath to the
// volume's directory on the host. The longest mountPath wins.
type mountRewriter struct {
	mounts []mountMap
}

type mountMap struct{ container, host string }

func newMountRewriter(c *v1.Container, volumes map[string]string) mountRewriter {
	var r mountRewriter
	for _, m := range c.VolumeMounts {
		host, ok := volumes[m.Name]
		if !ok {
			continue
		}
		if m.SubPath != "" {
			host = filepath.Join(host, m.SubPath)
		}
		r.mounts = append(r.mounts, mountMap{container: strings.TrimSuffix(m.MountPath, "/"), host: host})
	}
	sort.Slice(r.mounts, func(i, j int) bool { return len(r.mounts[i].container) > len(r.mounts[j].container) })
	return r
}

// rewrite replaces a leading mountPath in s by the host directory. The
// mountPath must end s or be followed by "/", so /etc/tls does not match
// /etc/tlsx.
func (r mountRewriter) rewrite(s string) string {
	for _, m := range r.mounts {
		if m.container == "" {
			continue
		}
		if s == m.container || strings.HasPrefix(s, m.container+"/") {
			return m.host + s[len(m.container):]
		}
	}
	return s
}

func (r mountRewriter) hostFor(containerPath string) (string, bool) {
	out := r.rewrite(containerPath)
	return out, out != containerPath
}

// containerEnv builds the process environment: a minimal base, localkube's
// variables, envFrom, then env with $(VAR) expansion, each value passed
// through the mount rewriter.
func (w *podWorker) containerEnv(c *v1.Container, rw mountRewriter) ([]string, map[string]string, error) {
	env := map[string]string{
		"PATH":          os.Getenv("PATH"),
		"HOME":          w.dir,
		"HOSTNAME":      w.pod.Name,
		EnvPodLocalhost: "127.0.0.1",
		EnvPodIP:        w.podIP.String(),
		EnvPodDir:       w.dir,
	}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	if host, ok := rw.hostFor(saMountPath); ok {
		kc, err := w.k.writePodKubeconfig(w.dir, host, w.pod.Namespace)
		if err != nil {
			return nil, nil, err
		}
		set("KUBECONFIG", kc)
	}
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := w.k.configMaps.ConfigMaps(w.pod.Namespace).Get(from.ConfigMapRef.Name)
			if err != nil {
				if isTrue(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, nil, fmt.Errorf("configmap %q not found", from.ConfigMapRef.Name)
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := w.k.secrets.Secrets(w.pod.Namespace).Get(from.SecretRef.Name)
			if err != nil {
				if isTrue(from.SecretRef.Optional) {
					continue
				}
				return nil, nil, fmt.Errorf("secret %q not found", from.SecretRef.Name)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for k, v := range data {
			set(from.Prefix+k, rw.rewrite(v))
		}
	}
	for _, e := range c.Env {
		val := e.Value
		if e.ValueFrom == nil {
			val = expansion.Expand(val, expansion.MappingFuncFor(env))
		} else {
			v, ok, err := w.envSource(e.ValueFrom)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %v", e.Name, err)
			}
			if !ok {
				continue
			}
			val = v
		}
		set(e.Name, rw.rewrite(val))
	}
	out := make([]string, 0, len(env))
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out, env, nil
}

func (w *podWorker) envSource(src *v1.EnvVarSource) (string, bool, error) {
	switch {
	case src.FieldRef != nil:
		v, err := podField(w.pod, src.FieldRef.FieldPath)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		return "0", true, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := w.k.configMaps.ConfigMaps(w.pod.Namespace).Get(ref.Name)
		if err == nil {
			if v, ok := cm.Data[ref.Key]; ok {
				return v, true, nil
			}
		}
		if isTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("configmap %q key %q not found", ref.Name, ref.Key)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := w.k.secrets.Secrets(w.pod.Namespace).Get(ref.Name)
		if err == nil {
			if v, ok := s.Data[ref.Key]; ok {
				return string(v), true, nil
			}
		}
		if isTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("secret %q key %q not found", ref.Name, ref.Key)
	}
	return "", false, nil
}

// argv is the process's arguments after the executable: the tail of
// command (whose head is taken to be the image's entrypoint, replaced by
// the mapped binary) then args, with $(VAR) expanded and paths rewritten.
func argv(c *v1.Container, env map[string]string, rw mountRewriter) []string {
	var raw []string
	if len(c.Command) > 1 {
		raw = append(raw, c.Command[1:]...)
	}
	raw = append(raw, c.Args...)
	out := make([]string, len(raw))
	mapping := expansion.MappingFuncFor(env)
	for i, a := range raw {
		out[i] = rw.rewriteArg(expansion.Expand(a, mapping))
	}
	return out
}

// rewriteArg also rewrites the value of a "-flag=/path" or "--flag=/path"
// argument, the common way binaries take file paths.
func (r mountRewriter) rewriteArg(a string) string {
	if strings.HasPrefix(a, "-") {
		if i := strings.IndexByte(a, '='); i > 0 {
			return a[:i+1] + r.rewrite(a[i+1:])
		}
	}
	return r.rewrite(a)
}
