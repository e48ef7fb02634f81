// Command emojivoto is the demo application: `emojivoto web|emoji|voting|vote-bot`.
// Ports and peers come from the public emojivoto's environment variables
// (GRPC_PORT, WEB_PORT, EMOJISVC_HOST, VOTINGSVC_HOST, WEB_HOST), so its
// manifests carry over; flags override them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"meshtls/demo/emojivoto"
	"meshtls/internal/version"
	pb "meshtls/proto/emojivoto"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "emojivoto:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "emojivoto",
		Version:       version.Version,
		Short:         "The demo application: web front end, emoji and voting services, vote bot",
		SilenceUsage:  true,
		SilenceErrors: true,
		Example: `  GRPC_PORT=8080 emojivoto emoji
  GRPC_PORT=8080 emojivoto voting
  WEB_PORT=8080 EMOJISVC_HOST=emoji-svc.emojivoto:8080 VOTINGSVC_HOST=voting-svc.emojivoto:8080 emojivoto web
  WEB_HOST=web-svc.emojivoto:80 emojivoto vote-bot --rate 2
  emojivoto lookup --connect web-svc.emojivoto:80 emoji-svc.emojivoto:8080`,
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	root.AddCommand(grpcCmd("emoji", "Serve the emoji menu over gRPC", log, func(s *grpc.Server) {
		pb.RegisterEmojiServiceServer(s, emojivoto.EmojiServer{})
	}))
	root.AddCommand(grpcCmd("voting", "Count votes over gRPC (votes for :doughnut: fail)", log, func(s *grpc.Server) {
		pb.RegisterVotingServiceServer(s, &emojivoto.VotingServer{})
	}))
	root.AddCommand(webCmd(log), botCmd(log), lookupCmd())
	return root
}

func grpcCmd(name, short string, log *slog.Logger, register func(*grpc.Server)) *cobra.Command {
	var port string
	cmd := &cobra.Command{
		Use:   name,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lis, err := net.Listen("tcp", net.JoinHostPort("", port))
			if err != nil {
				return fmt.Errorf("listen on port %s (--port or GRPC_PORT): %w", port, err)
			}
			s := grpc.NewServer()
			register(s)
			go func() {
				<-cmd.Context().Done()
				s.GracefulStop()
			}()
			log.Info(name+" serving gRPC", "addr", lis.Addr().String())
			return s.Serve(lis)
		},
	}
	cmd.Flags().StringVar(&port, "port", env("GRPC_PORT", "8080"), "gRPC port ($GRPC_PORT)")
	return cmd
}

func dial(target string) (*grpc.ClientConn, error) {
	// The mesh's proxy adds TLS; the app itself speaks plain gRPC, as
	// emojivoto does.
	return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func webCmd(log *slog.Logger) *cobra.Command {
	var port, emojiAddr, votingAddr string
	cmd := &cobra.Command{
		Use:   "web",
		Short: "Serve the page and /api/{list,vote,leaderboard}, calling emoji and voting over gRPC",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			emojiConn, err := dial(emojiAddr)
			if err != nil {
				return fmt.Errorf("emoji service %q: %w", emojiAddr, err)
			}
			defer emojiConn.Close()
			votingConn, err := dial(votingAddr)
			if err != nil {
				return fmt.Errorf("voting service %q: %w", votingAddr, err)
			}
			defer votingConn.Close()
			w := &emojivoto.Web{Emoji: pb.NewEmojiServiceClient(emojiConn), Voting: pb.NewVotingServiceClient(votingConn), Log: log}
			return serveHTTP(cmd.Context(), log, "web", port, w.Handler())
		},
	}
	cmd.Flags().StringVar(&port, "port", env("WEB_PORT", "8080"), "HTTP port ($WEB_PORT)")
	cmd.Flags().StringVar(&emojiAddr, "emoji-addr", env("EMOJISVC_HOST", "emoji-svc:8080"), "emoji service host:port ($EMOJISVC_HOST)")
	cmd.Flags().StringVar(&votingAddr, "voting-addr", env("VOTINGSVC_HOST", "voting-svc:8080"), "voting service host:port ($VOTINGSVC_HOST)")
	return cmd
}

func botCmd(log *slog.Logger) *cobra.Command {
	var webHost, truthPort, truthFile string
	var rate float64
	cmd := &cobra.Command{
		Use:   "vote-bot",
		Short: "Drive steady traffic at web and serve the ground truth of what was sent and what failed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bot := &emojivoto.Bot{WebURL: "http://" + webHost, Rate: rate}
			ctx := cmd.Context()
			if truthPort != "" && truthPort != "0" {
				mux := http.NewServeMux()
				mux.Handle("GET /truth", bot.TruthHandler())
				go func() { _ = serveHTTP(ctx, log, "vote-bot truth", truthPort, mux) }()
			}
			if truthFile != "" {
				go writeTruthEvery(ctx, bot, truthFile, 5*time.Second)
			}
			log.Info("vote-bot started", "web", webHost, "rate", rate)
			err := bot.Run(ctx)
			if truthFile != "" {
				if werr := writeTruth(bot, truthFile); werr != nil {
					log.Warn("writing truth file failed", "err", werr)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&webHost, "web-host", env("WEB_HOST", "web-svc:80"), "web front end host:port ($WEB_HOST)")
	cmd.Flags().Float64Var(&rate, "rate", envFloat("VOTE_RATE", 1), "list+vote rounds per second ($VOTE_RATE)")
	cmd.Flags().StringVar(&truthPort, "truth-port", env("TRUTH_PORT", "8802"), "port serving GET /truth (0 disables) ($TRUTH_PORT)")
	cmd.Flags().StringVar(&truthFile, "truth-file", os.Getenv("TRUTH_FILE"), "also write the truth to this file every 5s and at exit ($TRUTH_FILE)")
	return cmd
}

// lookupCmd resolves names as the apps do (Go's resolver, the pod's
// resolv.conf) and, with --connect, dials them as the apps do, so a
// one-shot pod tells whether cluster DNS and Service addresses work for
// them.
func lookupCmd() *cobra.Command {
	var timeout time.Duration
	var connect bool
	cmd := &cobra.Command{
		Use:   "lookup NAME[:PORT]...",
		Short: "Resolve names (and with --connect dial NAME:PORT) as the apps do; exit 1 if one fails",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, names []string) error {
			var failed error
			out := cmd.OutOrStdout()
			for _, arg := range names {
				host, port, err := net.SplitHostPort(arg)
				if err != nil {
					host, port = arg, ""
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				addrs, err := net.DefaultResolver.LookupHost(ctx, host)
				if err == nil && connect && port != "" {
					var c net.Conn
					if c, err = (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(addrs[0], port)); err == nil {
						_ = c.Close()
					}
				}
				cancel()
				if err != nil {
					fmt.Fprintf(out, "%s: %v\n", arg, err)
					failed = fmt.Errorf("%s: %w", arg, err)
					continue
				}
				fmt.Fprintf(out, "%s: %s\n", arg, strings.Join(addrs, " "))
			}
			return failed
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "per-name timeout")
	cmd.Flags().BoolVar(&connect, "connect", false, "also open a TCP connection to NAME:PORT")
	return cmd
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil {
		return v
	}
	return def
}

func writeTruthEvery(ctx context.Context, bot *emojivoto.Bot, path string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = writeTruth(bot, path)
		}
	}
}

func writeTruth(bot *emojivoto.Bot, path string) error {
	b, err := json.MarshalIndent(bot.Truth(), "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func serveHTTP(ctx context.Context, log *slog.Logger, name, port string, h http.Handler) error {
	srv := &http.Server{Addr: net.JoinHostPort("", port), Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info(name+" serving HTTP", "addr", srv.Addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
