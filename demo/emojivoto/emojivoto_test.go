package emojivoto

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "meshtls/proto/emojivoto"
)

// startGRPC serves one service on a free loopback port over real gRPC.
func startGRPC(t *testing.T, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestBotTruthMatchesServices runs the whole app over real sockets and
// checks the bot's ground truth against what the services recorded: every
// vote that did not fail is on the leaderboard, and only :doughnut: fails.
func TestBotTruthMatchesServices(t *testing.T) {
	emojiConn := startGRPC(t, func(s *grpc.Server) { pb.RegisterEmojiServiceServer(s, EmojiServer{}) })
	votingConn := startGRPC(t, func(s *grpc.Server) { pb.RegisterVotingServiceServer(s, &VotingServer{}) })
	web := &Web{Emoji: pb.NewEmojiServiceClient(emojiConn), Voting: pb.NewVotingServiceClient(votingConn)}
	srv := httptest.NewServer(web.Handler())
	t.Cleanup(srv.Close)

	bot := &Bot{WebURL: srv.URL, Rate: 200, Rand: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bot.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tr := bot.Truth()
		if v := tr.Targets["/api/vote"]; v != nil && v.Sent >= 100 && v.Failed > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bot made too little progress in 30s: %+v", tr.Targets)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	truth := bot.Truth()
	list, vote := truth.Targets["/api/list"], truth.Targets["/api/vote"]
	if list.Failed != 0 {
		t.Errorf("/api/list failed %d times: %+v", list.Failed, list.ByStatus)
	}
	if vote.ByStatus["500"] != vote.Failed {
		t.Errorf("vote failures should all be 500s from the :doughnut: rule: %+v", vote)
	}

	resp, err := http.Get(srv.URL + "/api/leaderboard")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var board []struct {
		Shortcode string `json:"shortcode"`
		Votes     int64  `json:"votes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&board); err != nil {
		t.Fatal(err)
	}
	var counted int64
	for _, row := range board {
		if row.Shortcode == FailingShortcode {
			t.Errorf("%s is on the leaderboard with %d votes; its votes must fail", FailingShortcode, row.Votes)
		}
		counted += row.Votes
	}
	if want := vote.Sent - vote.Failed; counted != want {
		t.Errorf("leaderboard counts %d votes, bot saw %d succeed (%d sent, %d failed)", counted, want, vote.Sent, vote.Failed)
	}
}

func TestVoteErrors(t *testing.T) {
	emojiConn := startGRPC(t, func(s *grpc.Server) { pb.RegisterEmojiServiceServer(s, EmojiServer{}) })
	votingConn := startGRPC(t, func(s *grpc.Server) { pb.RegisterVotingServiceServer(s, &VotingServer{}) })
	srv := httptest.NewServer((&Web{Emoji: pb.NewEmojiServiceClient(emojiConn), Voting: pb.NewVotingServiceClient(votingConn)}).Handler())
	t.Cleanup(srv.Close)
	for path, want := range map[string]int{
		"/api/vote":                   http.StatusBadRequest,
		"/api/vote?choice=:nope:":     http.StatusInternalServerError,
		"/api/vote?choice=:doughnut:": http.StatusInternalServerError,
		"/api/vote?choice=:ghost:":    http.StatusOK,
		"/":                           http.StatusOK,
		"/missing":                    http.StatusNotFound,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}
