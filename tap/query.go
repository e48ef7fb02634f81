package tap

import (
	"fmt"
	"strings"

	"meshtls/contract"
	tappb "meshtls/proto/tap"
	"meshtls/tap/match"
)

// KindNamespace is the Target kind that taps every pod of a namespace.
const KindNamespace = "namespace"

var targetKinds = map[string]string{
	"deployment": contract.KindDeployment, "deployments": contract.KindDeployment, "deploy": contract.KindDeployment,
	"statefulset": contract.KindStatefulSet, "statefulsets": contract.KindStatefulSet, "sts": contract.KindStatefulSet,
	"daemonset": contract.KindDaemonSet, "daemonsets": contract.KindDaemonSet, "ds": contract.KindDaemonSet,
	"pod": contract.KindPod, "pods": contract.KindPod, "po": contract.KindPod,
	"namespace": KindNamespace, "namespaces": KindNamespace, "ns": KindNamespace,
}

// ValidTargetKinds is for help and errors.
const ValidTargetKinds = "deployment (deploy), statefulset (sts), daemonset (ds), pod (po), namespace (ns)"

// TargetKindNames lists the accepted spellings, for completion.
func TargetKindNames() []string {
	return []string{"deployment", "deploy", "statefulset", "sts", "daemonset", "ds", "pod", "po", "namespace", "ns"}
}

// Target names what to tap: one workload (Name set), every workload of a
// kind in a namespace (Name empty), or a namespace.
type Target struct {
	// Kind is a contract owner kind (deployment, pod, …) or KindNamespace.
	Kind      string
	Name      string
	Namespace string
}

// ParseTarget reads "TYPE", "TYPE NAME" or "TYPE/NAME" in namespace.
func ParseTarget(args []string, namespace string) (Target, error) {
	if len(args) == 0 || len(args) > 2 {
		return Target{}, fmt.Errorf("expected RESOURCE [NAME] or RESOURCE/NAME, got %d arguments", len(args))
	}
	typ, name := args[0], ""
	if t, n, ok := strings.Cut(typ, "/"); ok {
		if len(args) == 2 {
			return Target{}, fmt.Errorf("give the name either as %q or as a second argument, not both", typ)
		}
		if n == "" {
			return Target{}, fmt.Errorf("resource %q has an empty name", typ)
		}
		typ, name = t, n
	} else if len(args) == 2 {
		name = args[1]
	}
	kind, ok := targetKinds[strings.ToLower(typ)]
	if !ok {
		return Target{}, fmt.Errorf("cannot tap resource type %q: valid types are %s", typ, ValidTargetKinds)
	}
	t := Target{Kind: kind, Name: name, Namespace: namespace}
	if kind == KindNamespace {
		if name == "" {
			t.Name = namespace
		}
		t.Namespace = t.Name
	}
	return t, nil
}

func (t Target) String() string {
	short := kindShort[t.Kind]
	if t.Kind == KindNamespace {
		short = "ns"
	}
	if t.Name == "" {
		return short
	}
	return short + "/" + t.Name
}

// Matches reports whether a peer's labels place it in the target.
func (t Target) Matches(p Peer) bool {
	if t.Namespace != "" && p.Namespace() != t.Namespace {
		return false
	}
	switch t.Kind {
	case KindNamespace, "":
		return true
	case contract.KindPod:
		return p.Pod() != "" && (t.Name == "" || p.Pod() == t.Name)
	default:
		v, ok := p.Labels[t.Kind]
		return ok && (t.Name == "" || v == t.Name)
	}
}

// Query is what to tap: the target's pods, and the flag filters that a
// source applies where the events are made (the proxies, through the tap
// API), so unwanted events never cross the network.
type Query struct {
	Target Target
	// To keeps only requests from the target to this resource.
	To *Target
	// Method, Authority and Scheme match exactly; PathPrefix is a prefix.
	Method, PathPrefix, Authority, Scheme string
	// MaxRPS caps the requests reported per second; 0 means no cap.
	MaxRPS float64
}

// Match builds the tap API's match for the query's flag filters. The
// target is not in it: the tap API resolves the target to pods and asks
// only their proxies.
func (q Query) Match() *tappb.ObserveRequest_Match {
	var all []*tappb.ObserveRequest_Match
	label := func(key, value string) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_DestinationLabel{
			DestinationLabel: &tappb.ObserveRequest_Match_Label{Key: key, Value: value}}}
	}
	http := func(h *tappb.ObserveRequest_Match_Http) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Http_{Http: h}}
	}
	if to := q.To; to != nil {
		if to.Namespace != "" {
			all = append(all, label("namespace", to.Namespace))
		}
		if to.Name != "" && to.Kind != KindNamespace {
			key := to.Kind
			if key == contract.KindPod {
				key = "pod"
			}
			all = append(all, label(key, to.Name))
		}
	}
	if q.Method != "" {
		all = append(all, http(&tappb.ObserveRequest_Match_Http{Match: &tappb.ObserveRequest_Match_Http_Method{Method: q.Method}}))
	}
	if q.Scheme != "" {
		all = append(all, http(&tappb.ObserveRequest_Match_Http{Match: &tappb.ObserveRequest_Match_Http_Scheme{Scheme: q.Scheme}}))
	}
	if q.Authority != "" {
		all = append(all, http(&tappb.ObserveRequest_Match_Http{Match: &tappb.ObserveRequest_Match_Http_Authority{
			Authority: &tappb.ObserveRequest_Match_Http_StringMatch{Match: &tappb.ObserveRequest_Match_Http_StringMatch_Exact{Exact: q.Authority}}}}))
	}
	if q.PathPrefix != "" {
		all = append(all, http(&tappb.ObserveRequest_Match_Http{Match: &tappb.ObserveRequest_Match_Http_Path{
			Path: &tappb.ObserveRequest_Match_Http_StringMatch{Match: &tappb.ObserveRequest_Match_Http_StringMatch_Prefix{Prefix: q.PathPrefix}}}}))
	}
	if len(all) == 0 {
		return nil
	}
	return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_All{All: &tappb.ObserveRequest_Match_Seq{Matches: all}}}
}

// ObserveRequest is the query as the tap API's request.
func (q Query) ObserveRequest() *tappb.ObserveRequest {
	return &tappb.ObserveRequest{Match: q.Match(), MaxRps: q.MaxRPS}
}

// Selects reports whether the target's proxy reported e (inbound to the
// target, or outbound from it), and with --to, whether e goes there.
func (q Query) Selects(e *Event) bool {
	if !q.Target.Matches(e.Proxy()) {
		return false
	}
	if q.To != nil && (e.Direction != DirOutbound || !q.To.Matches(e.Dst)) {
		return false
	}
	return true
}

// EvalMatch evaluates a tap API match against a request event as a proxy
// does (the same evaluator): a nil match selects everything.
func EvalMatch(m *tappb.ObserveRequest_Match, e *Event) bool {
	return match.Eval(m, match.Request{Src: e.Src.Addr, Dst: e.Dst.Addr, SrcLabels: e.Src.Labels, DstLabels: e.Dst.Labels,
		Method: e.Method, Scheme: e.Scheme, Authority: e.Authority, Path: e.Path})
}
