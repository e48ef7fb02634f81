package proxy

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"meshtls/contract"
)

// FromEnv reads the configuration inject writes (inject/README.md). It
// needs only the listen addresses; TLS is configured when the identity and
// all three file paths are set.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		InboundAddr:        getenv(contract.EnvInboundListenAddr),
		OutboundAddr:       getenv(contract.EnvOutboundListenAddr),
		AdminAddr:          getenv(contract.EnvAdminListenAddr),
		TapAddr:            getenv(contract.EnvTapListenAddr),
		PodNamespace:       getenv(contract.EnvPodNamespace),
		PodName:            getenv(contract.EnvPodName),
		PodIP:              getenv(contract.EnvPodIP),
		Identity:           getenv(contract.EnvTLSPodIdentity),
		ControllerIdentity: getenv(contract.EnvTLSControllerID),
		TapIdentity:        getenv(contract.EnvTLSTapID),
		CertFile:           getenv(contract.EnvTLSCert),
		KeyFile:            getenv(contract.EnvTLSPrivateKey),
		TrustAnchorsFile:   getenv(contract.EnvTLSTrustAnchors),
	}
	defaults := map[*string]string{
		&c.InboundAddr:  fmt.Sprintf("0.0.0.0:%d", contract.InboundPort),
		&c.OutboundAddr: fmt.Sprintf("127.0.0.1:%d", contract.OutboundPort),
		&c.AdminAddr:    fmt.Sprintf("0.0.0.0:%d", contract.AdminPort),
		&c.TapAddr:      fmt.Sprintf("0.0.0.0:%d", contract.TapPort),
	}
	for p, d := range defaults {
		if *p == "" {
			*p = d
		}
	}
	tlsVars := []string{contract.EnvTLSPodIdentity, contract.EnvTLSCert, contract.EnvTLSPrivateKey, contract.EnvTLSTrustAnchors}
	var set, unset []string
	for _, v := range tlsVars {
		if getenv(v) != "" {
			set = append(set, v)
		} else {
			unset = append(unset, v)
		}
	}
	if len(set) > 0 && len(unset) > 0 {
		return c, fmt.Errorf("TLS is half configured: %s set but %s not", strings.Join(set, ", "), strings.Join(unset, ", "))
	}
	if ns := getenv(contract.EnvControllerNS); c.TapIdentity == "" && ns != "" {
		c.TapIdentity = contract.TapIdentity(ns)
	}
	var err error
	if c.ClusterNetworks, err = ParseNetworks(getenv(contract.EnvClusterNetworks)); err != nil {
		return c, fmt.Errorf("%s: %w", contract.EnvClusterNetworks, err)
	}
	opaque := getenv(contract.EnvOpaquePorts)
	if opaque == "" {
		opaque = contract.DefaultOpaquePorts
	}
	if c.OpaquePorts, err = ParsePorts(opaque); err != nil {
		return c, fmt.Errorf("%s: %w", contract.EnvOpaquePorts, err)
	}
	switch m := getenv(contract.EnvInboundTLS); m {
	case "", contract.TLSOptional:
	case contract.TLSRequired:
		if len(set) == 0 {
			// Without an identity every client would be refused.
			return c, fmt.Errorf("%s=required but TLS is not configured (%s unset)", contract.EnvInboundTLS, strings.Join(unset, ", "))
		}
		c.RequireTLS = true
	default:
		return c, fmt.Errorf("%s=%q: want %q or %q", contract.EnvInboundTLS, m, contract.TLSOptional, contract.TLSRequired)
	}
	if c.Probes, err = ParseProbes(getenv(contract.EnvInboundProbes)); err != nil {
		return c, fmt.Errorf("%s: %w", contract.EnvInboundProbes, err)
	}
	if c.TLSExemptPorts, err = ParsePorts(getenv(contract.EnvInboundTLSExemptPorts)); err != nil {
		return c, fmt.Errorf("%s: %w", contract.EnvInboundTLSExemptPorts, err)
	}
	c.ShutdownGrace, c.DrainDelay = 2*time.Minute, 5*time.Second
	for name, d := range map[string]*time.Duration{contract.EnvShutdownGrace: &c.ShutdownGrace, contract.EnvDrainDelay: &c.DrainDelay} {
		if v := getenv(name); v != "" {
			if *d, err = time.ParseDuration(v); err != nil || *d < 0 {
				return c, fmt.Errorf("%s=%q: want a duration such as 30s or 2m", name, v)
			}
		}
	}
	for name, d := range map[string]*time.Duration{contract.EnvMetricsRetainIdle: &c.MetricsRetainIdle, contract.EnvTCPIdleTimeout: &c.TCPIdleTimeout} {
		if v := getenv(name); v != "" {
			if *d, err = time.ParseDuration(v); err != nil || *d <= 0 {
				return c, fmt.Errorf("%s=%q: want a positive duration such as 10m or 1h", name, v)
			}
		}
	}
	if v := getenv(contract.EnvMaxAuthorities); v != "" {
		if c.MaxAuthorities, err = strconv.Atoi(v); err != nil || c.MaxAuthorities <= 0 {
			return c, fmt.Errorf("%s=%q: want a positive whole number such as 1000", contract.EnvMaxAuthorities, v)
		}
	}
	return c, nil
}

// TLSConfigured says whether the pod was injected with TLS.
func (c Config) TLSConfigured() bool {
	return c.Identity != "" && c.CertFile != "" && c.KeyFile != "" && c.TrustAnchorsFile != ""
}

// ParseNetworks reads comma-separated CIDRs ("10.0.0.0/8,fd00::/8").
func ParseNetworks(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// PortSet is a set of TCP ports.
type PortSet map[uint16]bool

// ParsePorts reads comma-separated ports and ranges ("25,3306,8000-8010"),
// as Linkerd's port annotations spell them.
func ParsePorts(s string) (PortSet, error) {
	out := PortSet{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		}
		if err1 != nil || err2 != nil || a == 0 || b < a {
			return nil, fmt.Errorf("%q is not a port (1-65535) or a range such as 8000-8010", f)
		}
		for p := a; p <= b; p++ {
			out[uint16(p)] = true
		}
	}
	return out, nil
}

// LogLevel maps LINKERD2_PROXY_LOG ("warn,linkerd2_proxy=info") to a level:
// the level given for the proxy's own target, else the default.
func LogLevel(filter string) slog.Level {
	level := slog.LevelInfo
	parse := func(s string) (slog.Level, bool) {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "trace", "debug":
			return slog.LevelDebug, true
		case "info":
			return slog.LevelInfo, true
		case "warn", "warning":
			return slog.LevelWarn, true
		case "error", "off":
			return slog.LevelError, true
		}
		return 0, false
	}
	own := false
	for _, part := range strings.Split(filter, ",") {
		target, lvl, scoped := strings.Cut(part, "=")
		if !scoped {
			if l, ok := parse(target); ok && !own {
				level = l
			}
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(target), "linkerd2_proxy") || strings.HasPrefix(strings.TrimSpace(target), "meshtls") {
			if l, ok := parse(lvl); ok {
				level, own = l, true
			}
		}
	}
	return level
}
