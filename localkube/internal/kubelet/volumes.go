package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// token is a cached ServiceAccount token for a projected volume.
type token struct {
	value   string
	refresh time.Time
}

// syncVolumes writes every volume of the pod under its directory and
// returns volume name → host path. Secret, ConfigMap, downward-API and
// projected volumes are rewritten atomically when their sources change.
func (w *podWorker) syncVolumes(ctx context.Context) (map[string]string, error) {
	paths := map[string]string{}
	var problems []string
	for _, vol := range w.pod.Spec.Volumes {
		host := filepath.Join(w.dir, "volumes", vol.Name)
		var files map[string]volumeFile
		var err error
		switch {
		case vol.EmptyDir != nil:
			err = os.MkdirAll(host, 0o777)
			if err == nil {
				// Writable by any runAsUser, as kubelet's emptyDir is (umask aside).
				err = os.Chmod(host, 0o777)
			}
			paths[vol.Name] = host
			if err != nil {
				problems = append(problems, err.Error())
			}
			continue
		case vol.HostPath != nil:
			paths[vol.Name] = vol.HostPath.Path
			continue
		case vol.Secret != nil:
			files, err = w.k.secretFiles(w.pod.Namespace, vol.Secret.SecretName, vol.Secret.Items, vol.Secret.Optional, mode(vol.Secret.DefaultMode))
		case vol.ConfigMap != nil:
			files, err = w.k.configMapFiles(w.pod.Namespace, vol.ConfigMap.Name, vol.ConfigMap.Items, vol.ConfigMap.Optional, mode(vol.ConfigMap.DefaultMode))
		case vol.DownwardAPI != nil:
			files, err = downwardFiles(w.pod, vol.DownwardAPI.Items, mode(vol.DownwardAPI.DefaultMode))
		case vol.Projected != nil:
			files, err = w.projectedFiles(ctx, vol.Name, vol.Projected)
		default:
			err = fmt.Errorf("volume %q: only emptyDir, hostPath, secret, configMap, downwardAPI and projected volumes are supported by localkube", vol.Name)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("volume %q: %v", vol.Name, err))
			continue
		}
		changed, err := writeAtomic(host, files)
		if err != nil {
			problems = append(problems, fmt.Sprintf("volume %q: %v", vol.Name, err))
			continue
		}
		if changed && w.volumesWritten {
			w.k.log.Printf("pod %s/%s: volume %q updated", w.pod.Namespace, w.pod.Name, vol.Name)
		}
		paths[vol.Name] = host
	}
	if len(problems) > 0 {
		return paths, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	w.volumesWritten = true
	return paths, nil
}

func mode(m *int32) os.FileMode {
	if m == nil {
		return 0o644
	}
	return os.FileMode(*m)
}

func itemMode(def os.FileMode, m *int32) os.FileMode {
	if m != nil {
		return os.FileMode(*m)
	}
	return def
}

func isTrue(b *bool) bool { return b != nil && *b }

// keyFiles projects data onto files: every key, or only the listed items.
func keyFiles(kind, name string, data map[string][]byte, items []v1.KeyToPath, optional *bool, def os.FileMode) (map[string]volumeFile, error) {
	files := map[string]volumeFile{}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = volumeFile{data: v, mode: def}
		}
		return files, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if isTrue(optional) {
				continue
			}
			return nil, fmt.Errorf("%s %q has no key %q", kind, name, it.Key)
		}
		files[it.Path] = volumeFile{data: v, mode: itemMode(def, it.Mode)}
	}
	return files, nil
}

func (k *Kubelet) secretFiles(ns, name string, items []v1.KeyToPath, optional *bool, def os.FileMode) (map[string]volumeFile, error) {
	s, err := k.secrets.Secrets(ns).Get(name)
	if apierrors.IsNotFound(err) && isTrue(optional) {
		return map[string]volumeFile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secret %q not found", name)
	}
	return keyFiles("secret", name, s.Data, items, optional, def)
}

func (k *Kubelet) configMapFiles(ns, name string, items []v1.KeyToPath, optional *bool, def os.FileMode) (map[string]volumeFile, error) {
	cm, err := k.configMaps.ConfigMaps(ns).Get(name)
	if apierrors.IsNotFound(err) && isTrue(optional) {
		return map[string]volumeFile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configmap %q not found", name)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for key, v := range cm.Data {
		data[key] = []byte(v)
	}
	for key, v := range cm.BinaryData {
		data[key] = v
	}
	return keyFiles("configmap", name, data, items, optional, def)
}

func downwardFiles(pod *v1.Pod, items []v1.DownwardAPIVolumeFile, def os.FileMode) (map[string]volumeFile, error) {
	files := map[string]volumeFile{}
	for _, it := range items {
		var val string
		switch {
		case it.FieldRef != nil:
			v, err := podField(pod, it.FieldRef.FieldPath)
			if err != nil {
				return nil, err
			}
			val = v
		case it.ResourceFieldRef != nil:
			val = "0"
		}
		files[it.Path] = volumeFile{data: []byte(val), mode: itemMode(def, it.Mode)}
	}
	return files, nil
}

// formatMap renders labels or annotations as kubelet does: key="value" lines.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%s", k, strconv.Quote(m[k]))
	}
	return b.String()
}

func (w *podWorker) projectedFiles(ctx context.Context, volName string, p *v1.ProjectedVolumeSource) (map[string]volumeFile, error) {
	def := mode(p.DefaultMode)
	files := map[string]volumeFile{}
	merge := func(f map[string]volumeFile) {
		for k, v := range f {
			files[k] = v
		}
	}
	for i, src := range p.Sources {
		switch {
		case src.Secret != nil:
			f, err := w.k.secretFiles(w.pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional, def)
			if err != nil {
				return nil, err
			}
			merge(f)
		case src.ConfigMap != nil:
			f, err := w.k.configMapFiles(w.pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, def)
			if err != nil {
				return nil, err
			}
			merge(f)
		case src.DownwardAPI != nil:
			f, err := downwardFiles(w.pod, src.DownwardAPI.Items, def)
			if err != nil {
				return nil, err
			}
			merge(f)
		case src.ServiceAccountToken != nil:
			tok, err := w.serviceAccountToken(ctx, fmt.Sprintf("%s/%d", volName, i), src.ServiceAccountToken)
			if err != nil {
				return nil, err
			}
			files[src.ServiceAccountToken.Path] = volumeFile{data: []byte(tok), mode: def}
		default:
			return nil, fmt.Errorf("projected source %d is not supported by localkube", i)
		}
	}
	return files, nil
}

// serviceAccountToken returns a pod-bound token from the TokenRequest API,
// refreshed after 80% of its lifetime as kubelet does.
func (w *podWorker) serviceAccountToken(ctx context.Context, key string, src *v1.ServiceAccountTokenProjection) (string, error) {
	if t, ok := w.tokens[key]; ok && time.Now().Before(t.refresh) {
		return t.value, nil
	}
	sa := w.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: w.pod.Name, UID: w.pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := w.k.client.CoreV1().ServiceAccounts(w.pod.Namespace).CreateToken(cctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %q: %v", sa, err)
	}
	now := time.Now()
	life := resp.Status.ExpirationTimestamp.Sub(now)
	w.tokens[key] = &token{value: resp.Status.Token, refresh: now.Add(life * 8 / 10)}
	return resp.Status.Token, nil
}
