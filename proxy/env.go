package proxy

import (
	"fmt"
	"log/slog"
	"strings"

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
	return c, nil
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
