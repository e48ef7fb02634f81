package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// newLogger is every controller's --log-format: text or JSON on stderr,
// each line tagged with the component.
func newLogger(format, component string) (*slog.Logger, error) {
	var handler slog.Handler
	switch format {
	case "text":
		handler = slog.NewTextHandler(os.Stderr, nil)
	case "json":
		handler = slog.NewJSONHandler(os.Stderr, nil)
	default:
		return nil, fmt.Errorf("unknown --log-format %q: use text or json", format)
	}
	return slog.New(handler).With("component", component), nil
}

// signalContext ends with parent (Background when nil), SIGINT or SIGTERM.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// serveAdmin serves h (/ready, /live, /metrics) on addr in the background;
// an empty addr disables it and returns nil. The caller closes the server.
func serveAdmin(addr string, h http.Handler, log *slog.Logger) (*http.Server, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	admin := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving admin endpoints", "addr", l.Addr().String())
	go func() {
		if err := admin.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server stopped", "err", err)
		}
	}()
	return admin, nil
}
