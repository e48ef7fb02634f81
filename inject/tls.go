package inject

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"meshtls/contract"
)

// namespaceTLS records a Namespace's linkerd.io/tls annotation: the mode
// of the pods inject sees in it.
func namespaceTLS(obj map[string]any, into map[string]string) error {
	if k, _ := obj["kind"].(string); k != "Namespace" {
		return nil
	}
	meta := getMap(obj, "metadata")
	name, _ := meta["name"].(string)
	v := strings.TrimSpace(annotation(meta, contract.TLSAnnotation))
	if name == "" || v == "" {
		return nil
	}
	if !validTLSMode(v) {
		return fmt.Errorf("namespace %s: annotation %s: %q is not %q or %q", name, contract.TLSAnnotation, v, contract.TLSOptional, contract.TLSRequired)
	}
	into[name] = v
	return nil
}

func validTLSMode(v string) bool { return v == contract.TLSOptional || v == contract.TLSRequired }

// tlsMode is a workload's TLS mode: its pod template's own
// linkerd.io/tls, else its Namespace's (when the input holds it), else
// --tls. A template inject wrote before (it carries the proxy version)
// holds inject's own annotation unless inject pinned it as the user's
// (contract.TLSPinnedAnnotation): then the namespace and the flag decide
// again, so re-injecting with another --tls changes it. pinned says the
// mode is the template's own.
func tlsMode(podMeta map[string]any, namespace string, o Options) (mode string, pinned bool, err error) {
	own := annotation(podMeta, contract.ProxyVersionAnnotation) == "" || annotation(podMeta, contract.TLSPinnedAnnotation) == "true"
	if v := strings.TrimSpace(annotation(podMeta, contract.TLSAnnotation)); v != "" && own {
		if !validTLSMode(v) {
			return "", false, fmt.Errorf("annotation %s: %q is not %q or %q", contract.TLSAnnotation, v, contract.TLSOptional, contract.TLSRequired)
		}
		return v, true, nil
	}
	if v, ok := o.nsTLS[namespace]; ok && namespace != "" {
		return v, false, nil
	}
	return o.TLS, false, nil
}

// probeList is the kubelet's HTTP probes of the application containers,
// as contract.EnvInboundProbes spells them: a required proxy lets these
// through in plain text. A named port resolves against its container's
// ports; one that does not resolve cannot be reached anyway.
func probeList(apps []any) string {
	seen := map[string]bool{}
	for _, a := range apps {
		c, _ := a.(map[string]any)
		named := map[string]int64{}
		for _, p := range asList(c["ports"]) {
			pm, _ := p.(map[string]any)
			n, _ := pm["name"].(string)
			if port, ok := intOf(pm["containerPort"]); ok && n != "" {
				named[n] = port
			}
		}
		for _, k := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
			h := getMap(getMap(c, k), "httpGet")
			if h == nil {
				continue
			}
			port, ok := intOf(h["port"])
			if !ok {
				n, _ := h["port"].(string)
				port, ok = named[n]
			}
			if !ok || port <= 0 || port > 65535 {
				continue
			}
			path, _ := h["path"].(string)
			path, _, _ = strings.Cut(path, "?")
			if path == "" {
				path = "/"
			}
			if strings.ContainsAny(path, " \t\n") {
				continue
			}
			seen[strconv.FormatInt(port, 10)+":"+path] = true
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// intOf reads a JSON number; a string port is a name.
func intOf(v any) (int64, bool) {
	switch x := v.(type) {
	case float64:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	case interface{ Int64() (int64, error) }:
		n, err := x.Int64()
		return n, err == nil
	}
	return 0, false
}
