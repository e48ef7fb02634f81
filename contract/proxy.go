package contract

// The proxy's containers, ports and user, as inject writes them.
const (
	ProxyContainerName = "linkerd-proxy"
	InitContainerName  = "linkerd-init"

	InboundPort  = 4143
	OutboundPort = 4140
	TapPort      = 4190
	AdminPort    = 4191

	InboundPortName = "linkerd-proxy"
	AdminPortName   = "linkerd-admin"
	TapPortName     = "linkerd-tap"

	// ProxyUID is the proxy's user; proxy-init exempts its traffic from
	// redirection so the proxy's own connections are not looped back.
	ProxyUID = 2102

	TrustAnchorsVolume = "linkerd-trust-anchors"
	IdentityVolume     = "linkerd-secrets"
	TrustAnchorsDir    = "/var/linkerd-io/trust-anchors"
	IdentityDir        = "/var/linkerd-io/identity"

	// ControllerComponent is the destination service's Deployment, whose
	// identity proxies expect when they ask it where traffic goes.
	ControllerComponent = "linkerd-controller"
	// DestinationPort is the controller's proxy API port.
	DestinationPort = 8086
)

// The proxy's environment: the names inject writes and the proxy reads.
const (
	EnvLog                = "LINKERD2_PROXY_LOG"
	EnvControllerNS       = "LINKERD2_PROXY_CONTROLLER_NAMESPACE"
	EnvDestinationAddr    = "LINKERD2_PROXY_DESTINATION_ADDR"
	EnvInboundListenAddr  = "LINKERD2_PROXY_INBOUND_LISTEN_ADDR"
	EnvOutboundListenAddr = "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR"
	EnvAdminListenAddr    = "LINKERD2_PROXY_ADMIN_LISTEN_ADDR"
	EnvTapListenAddr      = "LINKERD2_PROXY_TAP_LISTEN_ADDR"
	EnvPodNamespace       = "LINKERD2_PROXY_POD_NAMESPACE"
	EnvPodName            = "LINKERD2_PROXY_POD_NAME"
	EnvPodIP              = "LINKERD2_PROXY_POD_IP"
	EnvTLSTrustAnchors    = "LINKERD2_PROXY_TLS_TRUST_ANCHORS"
	EnvTLSCert            = "LINKERD2_PROXY_TLS_CERT"
	EnvTLSPrivateKey      = "LINKERD2_PROXY_TLS_PRIVATE_KEY"
	EnvTLSPodIdentity     = "LINKERD2_PROXY_TLS_POD_IDENTITY"
	EnvTLSControllerID    = "LINKERD2_PROXY_TLS_CONTROLLER_IDENTITY"
	// EnvTLSTapID overrides the one identity the tap port accepts;
	// unset, it is TapIdentity of EnvControllerNS.
	EnvTLSTapID = "LINKERD2_PROXY_TLS_TAP_IDENTITY"

	// EnvCores is the proxy's GOMAXPROCS, from its CPU limit.
	EnvCores = "LINKERD2_PROXY_CORES"
	// EnvClusterNetworks lists the CIDRs discovery is asked about
	// (comma-separated); traffic elsewhere is plain text without asking.
	// Unset: every non-loopback address is asked about.
	EnvClusterNetworks = "LINKERD2_PROXY_DESTINATION_GET_NETWORKS"
	// EnvOpaquePorts lists ports (comma-separated, ranges a-b allowed)
	// whose traffic is forwarded as opaque TCP without protocol
	// detection: server-speaks-first protocols. Unset: DefaultOpaquePorts.
	EnvOpaquePorts = "LINKERD2_PROXY_OPAQUE_PORTS"
	// EnvShutdownGrace bounds how long in-flight requests and open
	// connections may finish after SIGTERM (a Go duration; default 2m).
	EnvShutdownGrace = "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD"
	// EnvDrainDelay is how long the proxy keeps accepting after SIGTERM,
	// while peers still hold the pod as an endpoint (default 5s).
	EnvDrainDelay = "LINKERD2_PROXY_SHUTDOWN_DRAIN_DELAY"
	// EnvInboundTLS is the pod's TLS mode (TLSOptional or TLSRequired);
	// unset means optional. Required refuses inbound plain text.
	EnvInboundTLS = "LINKERD2_PROXY_INBOUND_TLS"
	// EnvInboundTLSExemptPorts lists ports (the syntax of EnvOpaquePorts)
	// where a required pod still accepts plain text, from
	// TLSExemptPortsAnnotation.
	EnvInboundTLSExemptPorts = "LINKERD2_PROXY_INBOUND_TLS_EXEMPT_PORTS"
	// EnvInboundProbes lists the kubelet's HTTP probes of the pod's
	// containers as PORT:PATH, space-separated (8080:/healthz 8081:/ready):
	// a required pod accepts these GET requests in plain text.
	EnvInboundProbes = "LINKERD2_PROXY_INBOUND_PROBES"
	// EnvMetricsRetainIdle is how long a metric series (and an outbound
	// connection pool) unused is kept (a positive Go duration; default
	// 10m, as linkerd2-proxy's variable of this name).
	EnvMetricsRetainIdle = "LINKERD2_PROXY_METRICS_RETAIN_IDLE"
	// EnvMaxAuthorities bounds the authority label values kept per
	// direction; further authorities share one series (default 1000).
	EnvMaxAuthorities = "LINKERD2_PROXY_METRICS_MAX_AUTHORITIES"
	// EnvTCPIdleTimeout closes an opaque TCP connection that carried no
	// byte either way for this long (a positive Go duration; default 1h).
	EnvTCPIdleTimeout = "LINKERD2_PROXY_TCP_IDLE_TIMEOUT"
)

// DefaultOpaquePorts are Linkerd's: SMTP, MySQL, Galera, PostgreSQL,
// Redis, Elasticsearch, memcached. Their servers speak first.
const DefaultOpaquePorts = "25,587,3306,4444,5432,6379,9300,11211"

// Pod annotations inject honours (Linkerd's names).
const (
	OpaquePortsAnnotation       = "config.linkerd.io/opaque-ports"
	SkipInboundPortsAnnotation  = "config.linkerd.io/skip-inbound-ports"
	SkipOutboundPortsAnnotation = "config.linkerd.io/skip-outbound-ports"
	ProxyCPURequestAnnotation   = "config.linkerd.io/proxy-cpu-request"
	ProxyCPULimitAnnotation     = "config.linkerd.io/proxy-cpu-limit"
	ProxyMemRequestAnnotation   = "config.linkerd.io/proxy-memory-request"
	ProxyMemLimitAnnotation     = "config.linkerd.io/proxy-memory-limit"
	// ClusterNetworksAnnotation lists the CIDRs the pod's proxy asks
	// discovery about (EnvClusterNetworks); it overrides inject's
	// --cluster-networks. Unset everywhere: every non-loopback address.
	ClusterNetworksAnnotation = "config.linkerd.io/cluster-networks"
	// TLSExemptPortsAnnotation lists ports (comma-separated, ranges a-b)
	// where a pod with linkerd.io/tls: required still accepts plain text.
	TLSExemptPortsAnnotation = "config.linkerd.io/tls-exempt-ports"
)

// Refusals of a required pod's proxy, as inbound_tls_refused_total's
// reason label and the tap event's error spell them.
const (
	// RefusedNoTLS: the client sent plain text (or TLS not addressed to
	// this pod's identity).
	RefusedNoTLS = "no_tls_from_remote"
	// TapRefusedPrefix starts a tap ResponseEnd error that marks a
	// request the proxy refused: "refused:" + reason.
	TapRefusedPrefix = "refused:"
)

// ProxyAwaitCommand is the proxy container's postStart hook: the kubelet
// starts the next container only when it returns. The proxy image holds
// its binary at /proxy (tools/images: entrypoint "/" + name).
var ProxyAwaitCommand = []string{"/proxy", "await", "--timeout=2m"}

// The tap API (`controller tap`), served as the aggregated API
// tap.linkerd.io/v1alpha1.
const (
	// TapComponent is the tap API's Deployment, Service and ServiceAccount.
	TapComponent = "linkerd-tap"
	// TapAPIService names the APIService, as Kubernetes spells it.
	TapAPIService = "v1alpha1.tap.linkerd.io"
	// TapAPIGroup is the API group users are granted watch on.
	TapAPIGroup = "tap.linkerd.io"
	// TapAPIPort is the tap API's HTTPS port in its pod.
	TapAPIPort = 8089
	// TapAdminPort serves the tap API's /ready, /live and /metrics.
	TapAdminPort = 9998
	// TapServingSecret holds the tap API's serving certificate (for the
	// API server, which checks it against the APIService's caBundle).
	TapServingSecret = "linkerd-tap-k8s-tls"
)

// TapViewClusterRole is the ClusterRole that lets a user tap: bind it to
// a user in a namespace to let them tap there.
func TapViewClusterRole(controlNamespace string) string {
	return "linkerd-" + controlNamespace + "-tap-view"
}
