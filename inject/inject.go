// Package inject adds the linkerd proxy to workload manifests for
// `linkerd inject`. It edits documents as generic maps rather than typed
// objects so fields it does not know (newer API fields, CRD extras) pass
// through untouched, and it removes any earlier injection before adding
// its own so injecting twice gives the same output.
package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"meshtls/contract"
	"meshtls/internal/imageref"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Options is what `linkerd inject` can change.
type Options struct {
	ControlNamespace string
	// TLS is "", "optional" or "required": the mode of workloads whose
	// pod template and namespace (when the input holds it) do not say.
	TLS string
	// Registry prefixes the images: <Registry>/proxy:<Version>.
	Registry string
	// Version is the proxy and proxy-init images' tag (--proxy-version).
	Version string
	// ImageDigests, when set, pins the images by digest (name → digest).
	ImageDigests map[string]string
	// ImagePullPolicy of the proxy and proxy-init; "" is IfNotPresent.
	ImagePullPolicy string
	// ImagePullSecrets are added to each injected pod's imagePullSecrets.
	ImagePullSecrets []string
	// ClusterDomain is the cluster's DNS domain; "" is cluster.local.
	ClusterDomain string
	// ProxyLogLevel is the proxy's log filter.
	ProxyLogLevel string
	// ClusterNetworks (comma-separated CIDRs) become every proxy's
	// LINKERD2_PROXY_DESTINATION_GET_NETWORKS unless a pod's
	// config.linkerd.io/cluster-networks says otherwise. Empty: not
	// written, and the proxy asks discovery about every address.
	ClusterNetworks string

	// nsTLS is the linkerd.io/tls annotation of each Namespace in the
	// input, by name.
	nsTLS map[string]string

	pullPolicy  corev1.PullPolicy
	pullSecrets []corev1.LocalObjectReference
}

func (o Options) images() imageref.Images {
	return imageref.Images{Registry: o.Registry, Version: o.Version, Digests: o.ImageDigests}
}

// Validate fills defaults and rejects bad values.
func (o *Options) Validate() error {
	if o.ControlNamespace == "" {
		o.ControlNamespace = "linkerd"
	}
	switch o.TLS {
	case "", contract.TLSOptional, contract.TLSRequired:
	default:
		return fmt.Errorf("invalid --tls value %q: use \"optional\" or \"required\"", o.TLS)
	}
	if o.Registry == "" {
		o.Registry = imageref.DefaultRegistry
	}
	if err := imageref.CheckRegistry("--registry", o.Registry); err != nil {
		return err
	}
	if err := imageref.CheckVersion("--proxy-version", o.Version); err != nil {
		return err
	}
	var err error
	if o.pullPolicy, err = imageref.PullPolicy(o.ImagePullPolicy); err != nil {
		return err
	}
	if o.pullSecrets, err = imageref.PullSecrets(o.ImagePullSecrets); err != nil {
		return err
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = contract.DefaultClusterDomain
	}
	if err := contract.CheckClusterDomain(o.ClusterDomain); err != nil {
		return err
	}
	if o.ClusterNetworks, err = CheckNetworks("--cluster-networks", o.ClusterNetworks); err != nil {
		return err
	}
	if o.ProxyLogLevel == "" {
		o.ProxyLogLevel = "warn,linkerd2_proxy=info"
	}
	return nil
}

// Outcome of one workload.
type Outcome int

const (
	Injected Outcome = iota
	Skipped
	// Noted is a caveat on a workload reported Injected elsewhere.
	Noted
)

// Report says what happened to one workload, for the summary on stderr.
type Report struct {
	Kind, Name, Namespace string
	Outcome               Outcome
	// Reason is why a workload was skipped, or a caveat on an injected one.
	Reason string
	// Check is which report check a skip belongs to (hostNetwork, …).
	Check string
}

// Result is one input's injected YAML plus its reports.
type Result struct {
	YAML      []byte
	Reports   []Report
	Documents int
	// InjectedDocuments counts documents with at least one injection.
	InjectedDocuments int
}

// Inject processes one multi-document YAML (or JSON) input. source names
// it in errors.
func Inject(input []byte, source string, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	res := &Result{}
	var out bytes.Buffer
	type parsed struct {
		doc document
		obj map[string]any
	}
	var docs []parsed
	for _, doc := range splitDocuments(input) {
		if isBlank(doc.text) {
			continue
		}
		obj, err := parseDocument(doc, source)
		if err != nil {
			return nil, err
		}
		docs = append(docs, parsed{doc, obj})
	}
	// A Namespace's mode is the default of the pods in it, wherever in
	// the input it comes.
	o.nsTLS = map[string]string{}
	for _, d := range docs {
		if err := namespaceTLS(d.obj, o.nsTLS); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, d.doc.index, err)
		}
	}
	for _, d := range docs {
		doc, obj := d.doc, d.obj
		res.Documents++
		before := len(res.Reports)
		injectObject(obj, o, &res.Reports)
		for _, r := range res.Reports[before:] {
			if r.Outcome == Injected {
				res.InjectedDocuments++
				break
			}
		}
		rendered, err := render(obj)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, doc.index, err)
		}
		out.WriteString("---\n")
		out.Write(rendered)
	}
	res.YAML = out.Bytes()
	return res, nil
}

type document struct {
	index int // 1-based, counting every separator-delimited part
	line  int // 1-based line of the document's first line in the input
	text  []byte
}

var separator = regexp.MustCompile(`^---(\s.*)?$`)

// splitDocuments cuts input at "---" lines, remembering where each
// document starts so errors can name the input's own line numbers. Empty
// parts are dropped and the rest numbered from 1, as a reader counts them.
func splitDocuments(input []byte) []document {
	var parts []document
	cur := document{line: 1}
	for i, l := range bytes.SplitAfter(input, []byte("\n")) {
		if separator.Match(bytes.TrimRight(l, "\r\n")) {
			parts = append(parts, cur)
			cur = document{line: i + 2}
			continue
		}
		cur.text = append(cur.text, l...)
	}
	parts = append(parts, cur)
	var docs []document
	for _, d := range parts {
		if !isBlank(d.text) {
			d.index = len(docs) + 1
			docs = append(docs, d)
		}
	}
	return docs
}

func isBlank(b []byte) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		t := bytes.TrimSpace(l)
		if len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("...")) {
			return false
		}
	}
	return true
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// parseDocument decodes one document, turning the YAML library's
// document-relative line into the input's line.
func parseDocument(doc document, source string) (map[string]any, error) {
	js, err := yaml.YAMLToJSON(doc.text)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
		msg = strings.TrimPrefix(msg, "yaml: ")
		line := doc.line
		if m := yamlLine.FindStringSubmatchIndex(msg); m != nil {
			rel, _ := strconv.Atoi(msg[m[2]:m[3]])
			line = doc.line + rel - 1
			msg = msg[:m[0]] + msg[m[1]:]
		}
		return nil, fmt.Errorf("%s: document %d, line %d: invalid YAML: %s", source, doc.index, line, msg)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	// Numbers stay as written: float64 would round large integers.
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s: document %d, line %d: %w", source, doc.index, doc.line, err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: document %d, line %d: not a Kubernetes object (want a mapping with apiVersion and kind)", source, doc.index, doc.line)
	}
	if _, ok := obj["kind"].(string); !ok {
		return nil, fmt.Errorf("%s: document %d, line %d: object has no kind", source, doc.index, doc.line)
	}
	return obj, nil
}

func render(obj map[string]any) ([]byte, error) {
	js, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

// workloadKinds maps the Kubernetes kinds inject handles to the owner kind
// spelled in identities.
var workloadKinds = map[string]string{
	"Deployment":            contract.KindDeployment,
	"StatefulSet":           contract.KindStatefulSet,
	"DaemonSet":             contract.KindDaemonSet,
	"ReplicaSet":            contract.KindReplicaSet,
	"ReplicationController": contract.KindReplicationController,
	"Pod":                   contract.KindPod,
	"Job":                   contract.KindJob,
	"CronJob":               contract.KindCronJob,
}

// foreignSidecars are the containers other meshes inject, by name. A pod
// with two meshes' proxies has two sets of iptables rules fighting over
// its traffic, so such a pod is reported and left alone.
var foreignSidecars = map[string]string{
	"istio-proxy":                "Istio",
	"istio-init":                 "Istio",
	"istio-validation":           "Istio",
	"consul-dataplane":           "Consul",
	"envoy-sidecar":              "Consul",
	"consul-connect-inject-init": "Consul",
	"kuma-sidecar":               "Kuma",
	"kuma-init":                  "Kuma",
	"osm-init":                   "Open Service Mesh",
	"cilium-envoy":               "Cilium",
}

// foreignSidecar names another mesh's container in the pod spec, if any.
func foreignSidecar(podSpec, podMeta map[string]any) (container, mesh string) {
	for _, field := range []string{"initContainers", "containers"} {
		for _, c := range asList(podSpec[field]) {
			m, _ := c.(map[string]any)
			name, _ := m["name"].(string)
			if mesh, ok := foreignSidecars[name]; ok {
				return name, mesh
			}
		}
	}
	if annotation(podMeta, "sidecar.istio.io/status") != "" {
		return "sidecar.istio.io/status annotation", "Istio"
	}
	return "", ""
}

func injectObject(obj map[string]any, o Options, reports *[]Report) {
	kind, _ := obj["kind"].(string)
	if strings.HasSuffix(kind, "List") {
		items, _ := obj["items"].([]any)
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				injectObject(m, o, reports)
			}
		}
		return
	}
	ownerKind, ok := workloadKinds[kind]
	if !ok {
		return
	}
	meta := getMap(obj, "metadata")
	name, _ := meta["name"].(string)
	namespace, _ := meta["namespace"].(string)
	r := Report{Kind: ownerKind, Name: name, Namespace: namespace}
	if name == "" {
		if g, _ := meta["generateName"].(string); g != "" {
			r.Name = g
		}
	}

	// Look before touching: a skipped object must come out as it went in.
	podMeta, podSpec := meta, getMap(obj, "spec")
	switch kind {
	case "Pod":
	case "CronJob":
		tmpl := getMap(getMap(getMap(podSpec, "jobTemplate"), "spec"), "template")
		podMeta, podSpec = getMap(tmpl, "metadata"), getMap(tmpl, "spec")
	default:
		tmpl := getMap(podSpec, "template")
		podMeta, podSpec = getMap(tmpl, "metadata"), getMap(tmpl, "spec")
	}
	other, mesh := foreignSidecar(podSpec, podMeta)
	switch {
	case namespace == "kube-system":
		r.Outcome, r.Check, r.Reason = Skipped, checkKubeSystem, "is in the kube-system namespace"
	case podSpec["hostNetwork"] == true:
		r.Outcome, r.Check, r.Reason = Skipped, checkHostNetwork, `uses "hostNetwork: true"`
	case annotation(meta, contract.InjectAnnotation) == "disabled" || annotation(podMeta, contract.InjectAnnotation) == "disabled":
		r.Outcome, r.Check, r.Reason = Skipped, checkDisabled, `has "linkerd.io/inject: disabled"`
	case other != "":
		r.Outcome, r.Check, r.Reason = Skipped, checkSidecar, fmt.Sprintf("already has %s's %s; not injected (two meshes' proxies would fight over the pod's traffic)", mesh, other)
	}
	if r.Outcome == Skipped {
		*reports = append(*reports, r)
		return
	}
	switch kind {
	case "Pod":
		podMeta, podSpec = mapAt(obj, "metadata"), mapAt(obj, "spec")
	case "CronJob":
		tmpl := mapAt(mapAt(mapAt(mapAt(obj, "spec"), "jobTemplate"), "spec"), "template")
		podMeta, podSpec = mapAt(tmpl, "metadata"), mapAt(tmpl, "spec")
	default:
		tmpl := mapAt(mapAt(obj, "spec"), "template")
		podMeta, podSpec = mapAt(tmpl, "metadata"), mapAt(tmpl, "spec")
	}
	if ownerKind == contract.KindJob || ownerKind == contract.KindCronJob {
		// Reported, not skipped: the pods get their identity, but the
		// proxy is a plain container and outlives the job's own.
		*reports = append(*reports, Report{Kind: ownerKind, Name: r.Name, Namespace: namespace, Outcome: Noted, Check: checkJob,
			Reason: "is injected, but its pods complete only once the proxy exits too: stop it when the job's work is done"})
	}

	mode, pinned, err := tlsMode(podMeta, namespace, o)
	if err != nil {
		r.Outcome, r.Check, r.Reason = Skipped, checkAnnotations, err.Error()+"; not injected until it is fixed"
		*reports = append(*reports, r)
		return
	}
	o.TLS = mode
	tls := mode != ""
	if mode == contract.TLSRequired && name == "" {
		// Without an identity a required proxy would refuse everyone:
		// say so rather than inject a pod nobody can reach.
		r.Outcome, r.Check, r.Reason = Skipped, checkTLS, "has no name (generateName), so it cannot be given the TLS identity linkerd.io/tls: required needs; not injected"
		*reports = append(*reports, r)
		return
	}
	if tls && name == "" {
		// The Secret's name comes from the owner's name, which a
		// generateName pod does not have yet.
		tls = false
		r.Check, r.Reason = checkTLS, "has no name (generateName), so it cannot be given a TLS identity; injected without TLS"
	}
	pc, err := readPodConfig(podMeta)
	if err != nil {
		r.Outcome, r.Check, r.Reason = Skipped, checkAnnotations, err.Error()+"; not injected until it is fixed"
		*reports = append(*reports, r)
		return
	}
	uninject(podMeta, podSpec)
	if mode == contract.TLSRequired {
		pc.probes = probeList(asList(podSpec["containers"]))
	}
	addProxy(podMeta, podSpec, ownerKind, name, o, tls, pc)
	if pinned && tls {
		mapAt(podMeta, "annotations")[contract.TLSPinnedAnnotation] = "true"
	}
	*reports = append(*reports, r)
}

// defaultContainerAnnotation is kubectl's: the container logs and exec
// use when none is named.
const defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

func annotation(meta map[string]any, key string) string {
	v, _ := getMap(meta, "annotations")[key].(string)
	return v
}

// getMap reads m[key] as a map without creating anything; nil when absent.
func getMap(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	return v
}

// mapAt returns m[key] as a map, creating it when absent so callers can
// write into it; m itself must not be nil.
func mapAt(m map[string]any, key string) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	v, ok := m[key].(map[string]any)
	if !ok {
		v = map[string]any{}
		m[key] = v
	}
	return v
}

// uninject removes everything an earlier inject added.
func uninject(podMeta, podSpec map[string]any) {
	podSpec["containers"] = withoutNamed(podSpec["containers"], contract.ProxyContainerName)
	if ic := withoutNamed(podSpec["initContainers"], contract.InitContainerName); len(ic) > 0 {
		podSpec["initContainers"] = ic
	} else {
		delete(podSpec, "initContainers")
	}
	if v := withoutNamed(podSpec["volumes"], contract.TrustAnchorsVolume, contract.IdentityVolume); len(v) > 0 {
		podSpec["volumes"] = v
	} else {
		delete(podSpec, "volumes")
	}
	labels := mapAt(podMeta, "labels")
	for k := range labels {
		if k == contract.ControlPlaneNSLabel || strings.HasPrefix(k, contract.ProxyKindLabelPrefix) {
			delete(labels, k)
		}
	}
	ann := mapAt(podMeta, "annotations")
	for _, k := range []string{contract.ProxyVersionAnnotation, contract.CreatedByAnnotation, contract.TLSAnnotation, contract.TLSPinnedAnnotation} {
		delete(ann, k)
	}
}

func withoutNamed(list any, names ...string) []any {
	items, _ := list.([]any)
	out := make([]any, 0, len(items))
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			n, _ := m["name"].(string)
			drop := false
			for _, name := range names {
				drop = drop || n == name
			}
			if drop {
				continue
			}
		}
		out = append(out, it)
	}
	return out
}

func addProxy(podMeta, podSpec map[string]any, ownerKind, owner string, o Options, tls bool, pc podConfig) {
	labels := mapAt(podMeta, "labels")
	labels[contract.ControlPlaneNSLabel] = o.ControlNamespace
	// A bare pod is named by Kubernetes' own pod label in Prometheus; the
	// CA recognises it as its own owner without a label.
	if ownerKind != contract.KindPod {
		labels[contract.KindLabel(ownerKind)] = owner
	}
	ann := mapAt(podMeta, "annotations")
	ann[contract.CreatedByAnnotation] = "linkerd/cli " + o.Version
	ann[contract.ProxyVersionAnnotation] = o.Version
	if tls {
		ann[contract.TLSAnnotation] = o.TLS
	}

	// kubectl logs and exec keep going to the application's container,
	// now that the proxy comes first.
	apps := asList(podSpec["containers"])
	if len(apps) > 0 && annotation(podMeta, defaultContainerAnnotation) == "" {
		if first, _ := apps[0].(map[string]any); first != nil {
			if n, _ := first["name"].(string); n != "" {
				ann[defaultContainerAnnotation] = n
			}
		}
	}
	podSpec["initContainers"] = append(asList(podSpec["initContainers"]), toMap(initContainer(o, pc)))
	// First, so its postStart hook holds the application's start until the
	// proxy is ready (contract.ProxyAwaitCommand).
	podSpec["containers"] = append([]any{toMap(proxyContainer(ownerKind, owner, o, tls, pc))}, apps...)
	if tls {
		podSpec["volumes"] = append(asList(podSpec["volumes"]), tlsVolumes(ownerKind, owner)...)
	}
	addPullSecrets(podSpec, o.pullSecrets)
}

// addPullSecrets adds the secrets the proxy's images need to the pod's
// own, once each. They stay on uninject: they may be the workload's too,
// and a Secret reference the pod does not need is harmless.
func addPullSecrets(podSpec map[string]any, refs []corev1.LocalObjectReference) {
	if len(refs) == 0 {
		return
	}
	list := asList(podSpec["imagePullSecrets"])
	have := map[string]bool{}
	for _, it := range list {
		if m, ok := it.(map[string]any); ok {
			if n, ok := m["name"].(string); ok {
				have[n] = true
			}
		}
	}
	for _, r := range refs {
		if !have[r.Name] {
			list = append(list, toMap(r))
		}
	}
	podSpec["imagePullSecrets"] = list
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// toMap turns typed values into the generic form the documents use.
func toMap[T any](v T) any {
	js, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("inject: marshal %T: %v", v, err)) // our own types always marshal
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		panic(fmt.Sprintf("inject: unmarshal %T: %v", v, err))
	}
	return out
}
