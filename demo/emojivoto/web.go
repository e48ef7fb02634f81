package emojivoto

import (
	"context"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	pb "meshtls/proto/emojivoto"
)

// Web is the front end: a page, and a JSON API that calls the emoji and
// voting services over gRPC.
type Web struct {
	Emoji  pb.EmojiServiceClient
	Voting pb.VotingServiceClient
	Log    *slog.Logger
}

// Handler serves /, /api/list, /api/vote and /api/leaderboard.
func (w *Web) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", w.index)
	mux.HandleFunc("GET /api/list", w.list)
	mux.HandleFunc("GET /api/vote", w.vote)
	mux.HandleFunc("POST /api/vote", w.vote)
	mux.HandleFunc("GET /api/leaderboard", w.leaderboard)
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) { rw.WriteHeader(http.StatusOK) })
	return mux
}

func (w *Web) list(rw http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	res, err := w.Emoji.ListAll(ctx, &pb.ListAllEmojiRequest{})
	if err != nil {
		w.fail(rw, "list emoji", err)
		return
	}
	out := make([]map[string]string, 0, len(res.GetList()))
	for _, e := range res.GetList() {
		out = append(out, map[string]string{"unicode": e.GetUnicode(), "shortcode": e.GetShortcode()})
	}
	writeJSON(rw, out)
}

func (w *Web) vote(rw http.ResponseWriter, r *http.Request) {
	choice := r.URL.Query().Get("choice")
	if choice == "" {
		http.Error(rw, "missing ?choice=:shortcode:", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := w.Emoji.FindByShortcode(ctx, &pb.FindByShortcodeRequest{Shortcode: choice}); err != nil {
		w.fail(rw, "find emoji", err)
		return
	}
	if _, err := w.Voting.Vote(ctx, &pb.VoteRequest{Shortcode: choice}); err != nil {
		w.fail(rw, "vote", err)
		return
	}
	rw.WriteHeader(http.StatusOK)
}

func (w *Web) leaderboard(rw http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	res, err := w.Voting.Results(ctx, &pb.ResultsRequest{})
	if err != nil {
		w.fail(rw, "results", err)
		return
	}
	type row struct {
		Shortcode string `json:"shortcode"`
		Unicode   string `json:"unicode"`
		Votes     int32  `json:"votes"`
	}
	out := make([]row, 0, len(res.GetResults()))
	for _, v := range res.GetResults() {
		e, err := w.Emoji.FindByShortcode(ctx, &pb.FindByShortcodeRequest{Shortcode: v.GetShortcode()})
		if err != nil {
			w.fail(rw, "find emoji", err)
			return
		}
		out = append(out, row{Shortcode: v.GetShortcode(), Unicode: e.GetEmoji().GetUnicode(), Votes: v.GetVotes()})
	}
	writeJSON(rw, out)
}

func (w *Web) fail(rw http.ResponseWriter, what string, err error) {
	if w.Log != nil {
		w.Log.Warn(what+" failed", "err", err)
	}
	http.Error(rw, what+": "+err.Error(), http.StatusInternalServerError)
}

func writeJSON(rw http.ResponseWriter, v any) {
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(v)
}

var indexPage = template.Must(template.New("index").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Emoji Vote</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}button{font-size:2em;margin:.2em;background:none;border:1px solid #ccc;border-radius:.3em;cursor:pointer}</style>
</head><body>
<h1>🗳 Emoji Vote</h1><p>Tap an emoji to vote for it. <a href="/api/leaderboard">Leaderboard (JSON)</a></p>
<div id="emoji"></div><p id="msg"></p>
<script>
fetch('/api/list').then(r => r.json()).then(list => {
  const box = document.getElementById('emoji');
  for (const e of list) {
    const b = document.createElement('button');
    b.textContent = e.unicode; b.title = e.shortcode;
    b.onclick = () => fetch('/api/vote?choice=' + encodeURIComponent(e.shortcode), {method: 'POST'})
      .then(r => { document.getElementById('msg').textContent = r.ok ? 'Voted for ' + e.shortcode : 'Vote failed: ' + r.status; });
    box.appendChild(b);
  }
});
</script></body></html>
`))

func (w *Web) index(rw http.ResponseWriter, _ *http.Request) {
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = indexPage.Execute(rw, nil)
}
