// Package emojivoto is the demo application: the web front end, the emoji
// and voting gRPC services and the vote bot, behaving like the public
// emojivoto so the mesh can be shown on familiar traffic.
package emojivoto

import (
	"context"
	"sort"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "meshtls/proto/emojivoto"
)

// emojiList is the menu the web page offers, in display order.
var emojiList = []*pb.Emoji{
	{Unicode: "👻", Shortcode: ":ghost:"}, {Unicode: "🍩", Shortcode: ":doughnut:"},
	{Unicode: "🎉", Shortcode: ":tada:"}, {Unicode: "🐶", Shortcode: ":dog:"},
	{Unicode: "🌮", Shortcode: ":taco:"}, {Unicode: "🍕", Shortcode: ":pizza:"},
	{Unicode: "🚀", Shortcode: ":rocket:"}, {Unicode: "🔥", Shortcode: ":fire:"},
	{Unicode: "🦄", Shortcode: ":unicorn:"}, {Unicode: "🐱", Shortcode: ":cat:"},
	{Unicode: "🌈", Shortcode: ":rainbow:"}, {Unicode: "🎸", Shortcode: ":guitar:"},
	{Unicode: "🍔", Shortcode: ":hamburger:"}, {Unicode: "☕", Shortcode: ":coffee:"},
	{Unicode: "🐙", Shortcode: ":octopus:"}, {Unicode: "🌻", Shortcode: ":sunflower:"},
	{Unicode: "💩", Shortcode: ":poop:"}, {Unicode: "🤖", Shortcode: ":robot:"},
	{Unicode: "🦀", Shortcode: ":crab:"}, {Unicode: "🐧", Shortcode: ":penguin:"},
}

// FailingShortcode is the emoji whose votes always fail, as :doughnut:
// does in the public emojivoto.
const FailingShortcode = ":doughnut:"

// EmojiServer serves the emoji menu.
type EmojiServer struct {
	pb.UnimplementedEmojiServiceServer
}

// ListAll returns every emoji.
func (EmojiServer) ListAll(context.Context, *pb.ListAllEmojiRequest) (*pb.ListAllEmojiResponse, error) {
	return &pb.ListAllEmojiResponse{List: emojiList}, nil
}

// FindByShortcode returns one emoji, or NotFound.
func (EmojiServer) FindByShortcode(_ context.Context, req *pb.FindByShortcodeRequest) (*pb.FindByShortcodeResponse, error) {
	for _, e := range emojiList {
		if e.Shortcode == req.GetShortcode() {
			return &pb.FindByShortcodeResponse{Emoji: e}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no emoji %q", req.GetShortcode())
}

// VotingServer counts votes in memory.
type VotingServer struct {
	pb.UnimplementedVotingServiceServer
	mu    sync.Mutex
	votes map[string]int32
}

// Vote counts one vote; a vote for FailingShortcode fails.
func (v *VotingServer) Vote(_ context.Context, req *pb.VoteRequest) (*pb.VoteResponse, error) {
	code := req.GetShortcode()
	if code == "" {
		return nil, status.Error(codes.InvalidArgument, "empty shortcode")
	}
	if code == FailingShortcode {
		return nil, status.Errorf(codes.Unknown, "voting for %s is broken on purpose, as in emojivoto", code)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.votes == nil {
		v.votes = map[string]int32{}
	}
	v.votes[code]++
	return &pb.VoteResponse{}, nil
}

// Results returns the counts, most votes first.
func (v *VotingServer) Results(context.Context, *pb.ResultsRequest) (*pb.ResultsResponse, error) {
	v.mu.Lock()
	res := make([]*pb.VotingResult, 0, len(v.votes))
	for code, n := range v.votes {
		res = append(res, &pb.VotingResult{Shortcode: code, Votes: n})
	}
	v.mu.Unlock()
	sort.Slice(res, func(i, j int) bool {
		if res[i].Votes != res[j].Votes {
			return res[i].Votes > res[j].Votes
		}
		return res[i].Shortcode < res[j].Shortcode
	})
	return &pb.ResultsResponse{Results: res}, nil
}
